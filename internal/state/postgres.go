package state

import (
	"database/sql"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib"
)

// OpenPostgres connects to a PostgreSQL database shared by several servers.
// Update runs SERIALIZABLE and retries on serialization failures, so two
// servers registering the same family never hand out one revision twice.
func OpenPostgres(dsn string) (Store, error) {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, err
	}
	if _, err := db.Exec(postgresSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("state: initialise postgres: %w", err)
	}
	return &sqlStore{read: db, write: db, postgres: true, isConflict: func(err error) bool {
		var pe *pgconn.PgError
		// 40001 serialization_failure, 40P01 deadlock_detected, 23505 a
		// racing insert of the same key.
		return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01" || pe.Code == "23505")
	}}, nil
}
