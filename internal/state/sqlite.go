package state

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"

	_ "modernc.org/sqlite" // pure Go: one static binary, no cgo
)

// OpenSQLite opens (creating if needed) the state database at path.
func OpenSQLite(path string) (Store, error) {
	write, read, err := OpenSQLiteDB(path, schema, 8)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	return &sqlStore{read: read, write: write}, nil
}

// OpenSQLiteDB opens (creating if needed) a SQLite database at path and
// applies schema. Writes go through one connection so SQLite never reports
// "database is locked" to a writer; reads use a pool of up to readers WAL
// snapshots and do not block on writes. synchronous(NORMAL) in WAL mode
// survives a process crash; only a power loss can take the last
// transactions. The state, logs and metrics databases all open this way.
func OpenSQLiteDB(path, schema string, readers int) (write, read *sql.DB, err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, nil, err
	}
	dsn := fmt.Sprintf("file:%s?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=synchronous(NORMAL)&_txlock=immediate", path)
	write, err = sql.Open("sqlite", dsn)
	if err != nil {
		return nil, nil, err
	}
	write.SetMaxOpenConns(1)
	if _, err := write.Exec(schema); err != nil {
		write.Close()
		return nil, nil, fmt.Errorf("initialise %s: %w", path, err)
	}
	read, err = sql.Open("sqlite", dsn)
	if err != nil {
		write.Close()
		return nil, nil, err
	}
	read.SetMaxOpenConns(readers)
	return write, read, nil
}
