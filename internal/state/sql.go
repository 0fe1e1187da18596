package state

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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
	tx, err := s.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer tx.Rollback()
	return fn(&sqlTx{s: s, tx: tx, ctx: ctx})
}

func (s *sqlStore) Update(ctx context.Context, fn func(Tx) error) error {
	for attempt := 0; ; attempt++ {
		err := s.update(ctx, fn)
		if err == nil || s.isConflict == nil || !s.isConflict(err) || attempt >= 20 {
			return err
		}
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
	s   *sqlStore
	tx  *sql.Tx
	ctx context.Context
}

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
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = t.tx.ExecContext(t.ctx, t.s.q(`INSERT INTO documents (kind, key, data) VALUES (?, ?, ?)
		ON CONFLICT (kind, key) DO UPDATE SET data = excluded.data`), kind, key, string(b))
	return err
}

func (t *sqlTx) Delete(kind, key string) (bool, error) {
	res, err := t.tx.ExecContext(t.ctx, t.s.q(`DELETE FROM documents WHERE kind = ? AND key = ?`), kind, key)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

func (t *sqlTx) Scan(kind, prefix, after string, limit int, fn func(string, []byte) error) error {
	lo := prefix
	if after > lo {
		lo = after
	}
	query := `SELECT key, data FROM documents WHERE kind = ? AND key >= ? AND key > ? AND key < ? ORDER BY key`
	args := []any{kind, lo, after, prefixEnd(prefix)}
	if limit > 0 {
		query += ` LIMIT ?`
		args = append(args, limit)
	}
	rows, err := t.tx.QueryContext(t.ctx, t.s.q(query), args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var key, data string
		if err := rows.Scan(&key, &data); err != nil {
			return err
		}
		if err := fn(key, []byte(data)); err != nil {
			if errors.Is(err, ErrStop) {
				return nil
			}
			return err
		}
	}
	return rows.Err()
}

// prefixEnd is the smallest string greater than every string with prefix p.
// Keys are ASCII (ids, names, ARNs), so "\x7f" bounds them; an empty prefix
// selects everything.
func prefixEnd(p string) string {
	return p + "\x7f"
}
