// Package state is Gantry's durable state: one small transactional interface
// over keyed JSON documents, with SQLite (embedded, the default) and
// PostgreSQL (several servers sharing state) behind it. Both run the same
// test suite (store_test.go).
//
// Documents are grouped by kind and ordered by key; keys are built so that a
// prefix selects a scope (account/region/cluster/...), which is all the
// listing the API needs. Filtering beyond the prefix happens in Go.
package state

import (
	"context"
	"encoding/json"
	"errors"
)

// Store opens transactions over the documents.
type Store interface {
	// View runs fn in a read-only transaction.
	View(ctx context.Context, fn func(Tx) error) error
	// Update runs fn in a serializable read-write transaction, retried when
	// the database reports a conflict; fn must be safe to run again.
	Update(ctx context.Context, fn func(Tx) error) error
	Close() error
}

// Tx reads and writes documents inside one transaction.
type Tx interface {
	// Get decodes the document into v and reports whether it exists.
	Get(kind, key string, v any) (bool, error)
	// Put creates or replaces a document.
	Put(kind, key string, v any) error
	// Delete removes a document and reports whether it existed.
	Delete(kind, key string) (bool, error)
	// Scan calls fn for documents of kind whose key starts with prefix and
	// sorts after `after`, in key order, stopping after limit (0: no limit)
	// or when fn returns ErrStop.
	Scan(kind, prefix, after string, limit int, fn func(key string, data []byte) error) error
}

// ErrStop ends a Scan early without error.
var ErrStop = errors.New("stop scan")

// List decodes every document under prefix into a slice of T.
func List[T any](tx Tx, kind, prefix string) ([]T, error) {
	var out []T
	err := tx.Scan(kind, prefix, "", 0, func(_ string, data []byte) error {
		var v T
		if err := json.Unmarshal(data, &v); err != nil {
			return err
		}
		out = append(out, v)
		return nil
	})
	return out, err
}
