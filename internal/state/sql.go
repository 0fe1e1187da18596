package state

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"strings"
	"time"
	"unicode/utf8"
)

// sqlStore implements Store on database/sql for both SQLite and PostgreSQL;
// the dialects differ only in placeholders, locking and conflict detection.
type sqlStore struct {
	read, write *sql.DB
	postgres    bool
	// beginWrite starts a write transaction that will not fail on commit
	// because of a concurrent writer (SQLite: BEGIN IMMEDIATE on the single
	// writer connection; PostgreSQL: SERIALIZABLE, retried on conflict).
	isConflict func(error) bool
}

const schema = `CREATE TABLE IF NOT EXISTS documents (
	kind TEXT NOT NULL,
	key  TEXT NOT NULL,
	data TEXT NOT NULL,
	PRIMARY KEY (kind, key)
)`

// postgresSchema pins keys to byte order: a database's default collation is
// often linguistic (en_US), which would reorder keys and break the prefix
// bounds Scan relies on.
const postgresSchema = `CREATE TABLE IF NOT EXISTS documents (
	kind TEXT COLLATE "C" NOT NULL,
	key  TEXT COLLATE "C" NOT NULL,
	data TEXT NOT NULL,
	PRIMARY KEY (kind, key)
)`

func (s *sqlStore) q(query string) string {
	if !s.postgres {
		return query
	}
	// Rewrite ? placeholders to $n for PostgreSQL.
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func (s *sqlStore) View(ctx context.Context, fn func(Tx) error) error {
	opts := &sql.TxOptions{ReadOnly: true}
	if s.postgres {
		// One snapshot for the whole View, as SQLite's WAL readers get;
		// PostgreSQL's default would let each statement see newer commits.
		opts.Isolation = sql.LevelRepeatableRead
	}
	tx, err := s.read.BeginTx(ctx, opts)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	return fn(&sqlTx{s: s, tx: tx, ctx: ctx, readOnly: true})
}

// retryFor bounds how long Update keeps retrying conflicts: under heavy
// contention on one document every loser retries, so a count of attempts
// alone would fail callers that merely queued behind many writers.
const retryFor = 30 * time.Second

func (s *sqlStore) Update(ctx context.Context, fn func(Tx) error) error {
	deadline := time.Now().Add(retryFor)
	backoff := time.Millisecond
	for {
		err := s.update(ctx, fn)
		if err == nil || s.isConflict == nil || !s.isConflict(err) || time.Now().After(deadline) {
			return err
		}
		// Jitter keeps the writers that collided from colliding again.
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff/2 + mathrand.N(backoff)):
		}
		backoff = min(backoff*2, 100*time.Millisecond)
	}
}

func (s *sqlStore) update(ctx context.Context, fn func(Tx) error) error {
	var tx *sql.Tx
	var err error
	if s.postgres {
		tx, err = s.write.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelSerializable})
	} else {
		tx, err = s.write.BeginTx(ctx, nil)
	}
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(&sqlTx{s: s, tx: tx, ctx: ctx}); err != nil {
		return err
	}
	return tx.Commit()
}

func (s *sqlStore) Close() error {
	err := s.write.Close()
	if s.read != s.write {
		err = errors.Join(err, s.read.Close())
	}
	return err
}

type sqlTx struct {
	s        *sqlStore
	tx       *sql.Tx
	ctx      context.Context
	readOnly bool
}

// errReadOnly is returned by writes inside View; SQLite would otherwise
// accept them on a read connection.
var errReadOnly = errors.New("state: write inside a read-only transaction (use Update)")

func (t *sqlTx) Get(kind, key string, v any) (bool, error) {
	var data string
	err := t.tx.QueryRowContext(t.ctx, t.s.q(`SELECT data FROM documents WHERE kind = ? AND key = ?`), kind, key).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, json.Unmarshal([]byte(data), v)
}

func (t *sqlTx) Put(kind, key string, v any) error {
	if t.readOnly {
		return errReadOnly
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = t.tx.ExecContext(t.ctx, t.s.q(`INSERT INTO documents (kind, key, data) VALUES (?, ?, ?)
		ON CONFLICT (kind, key) DO UPDATE SET data = excluded.data`), kind, key, string(b))
	return err
}

func (t *sqlTx) Delete(kind, key string) (bool, error) {
	if t.readOnly {
		return false, errReadOnly
	}
	res, err := t.tx.ExecContext(t.ctx, t.s.q(`DELETE FROM documents WHERE kind = ? AND key = ?`), kind, key)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

func (t *sqlTx) Scan(kind, prefix, after string, limit int, fn func(string, []byte) error) error {
	query := `SELECT key, data FROM documents WHERE kind = ? AND key >= ? AND key > ?`
	args := []any{kind, prefix, after}
	if end, ok := prefixEnd(prefix); ok {
		query += ` AND key < ?`
		args = append(args, end)
	}
	query += ` ORDER BY key`
	if limit > 0 {
		query += ` LIMIT ?`
		args = append(args, limit)
	}
	docs, err := t.query(query, args...)
	if err != nil {
		return err
	}
	for _, d := range docs {
		if err := fn(d.key, d.data); err != nil {
			if errors.Is(err, ErrStop) {
				return nil
			}
			return err
		}
	}
	return nil
}

type document struct {
	key  string
	data []byte
}

// query reads all rows before Scan calls back: a transaction is one
// connection, and PostgreSQL cannot run the callback's Get or Put on it
// while a result is still streaming ("conn busy").
func (t *sqlTx) query(query string, args ...any) ([]document, error) {
	rows, err := t.tx.QueryContext(t.ctx, t.s.q(query), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var docs []document
	for rows.Next() {
		var key, data string
		if err := rows.Scan(&key, &data); err != nil {
			return nil, err
		}
		docs = append(docs, document{key, []byte(data)})
	}
	return docs, rows.Err()
}

// prefixEnd is the smallest string greater than every string that starts
// with p: p with its last character incremented (code point order is byte
// order in UTF-8, and both databases compare keys bytewise). It reports
// false when nothing bounds p from above (p is empty).
func prefixEnd(p string) (string, bool) {
	r := []rune(p)
	for i := len(r) - 1; i >= 0; i-- {
		if r[i] == utf8.MaxRune {
			continue
		}
		next := r[i] + 1
		if next >= 0xD800 && next <= 0xDFFF { // surrogates are not characters
			next = 0xE000
		}
		return string(r[:i]) + string(next), true
	}
	return "", false
}
