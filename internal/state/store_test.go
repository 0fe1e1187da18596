package state

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// opener opens the store under test; calling it again opens the same data,
// which is how the reopen test checks durability.
type opener func(t *testing.T) Store

func TestSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	testStore(t, func(t *testing.T) Store {
		s, err := OpenSQLite(path)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestSQLiteCreatesDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "state.db")
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
}

func postgresDSN(t *testing.T) string {
	dsn := os.Getenv("GANTRY_TEST_POSTGRES")
	if dsn == "" {
		t.Skip("GANTRY_TEST_POSTGRES is not set: the PostgreSQL store is not tested (scripts/test.sh starts a PostgreSQL and sets it; scripts/test-postgres.sh prints a DSN)")
	}
	return dsn
}

func TestPostgres(t *testing.T) {
	dsn := postgresDSN(t)
	testStore(t, func(t *testing.T) Store {
		s, err := OpenPostgres(dsn)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestPostgresLinguisticCollation runs the suite in a database whose default
// collation is ICU en-US, as many production databases are: key order and
// prefix bounds must still be byte order, or listings and pagination break.
func TestPostgresLinguisticCollation(t *testing.T) {
	dsn := postgresDSN(t)
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	name := "gantry_test_icu_" + randomHex(4)
	if _, err := admin.Exec(`CREATE DATABASE ` + name + ` TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'`); err != nil {
		t.Skipf("cannot create an ICU database here (%v); the collation case is not tested", err)
	}
	t.Cleanup(func() { admin.Exec(`DROP DATABASE ` + name + ` WITH (FORCE)`) })
	icuDSN, err := withDatabase(dsn, name)
	if err != nil {
		t.Fatal(err)
	}
	testStore(t, func(t *testing.T) Store {
		s, err := OpenPostgres(icuDSN)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// withDatabase points a URL or keyword/value DSN at another database.
func withDatabase(dsn, name string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", err
		}
		u.Path = "/" + name
		return u.String(), nil
	}
	// In keyword/value form the last setting of a keyword wins.
	return dsn + " dbname=" + name, nil
}

// testStore is the one suite every Store implementation must pass. Each
// subtest uses its own random kind, so runs sharing a PostgreSQL database do
// not see each other's documents.
func testStore(t *testing.T, open opener) {
	s := open(t)
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()

	t.Run("GetPutDelete", func(t *testing.T) {
		kind := newKind(t, s)
		type doc struct {
			Name  string `json:"name"`
			Count int    `json:"count"`
		}
		mustUpdate(t, s, func(tx Tx) error {
			var d doc
			if ok, err := tx.Get(kind, "k", &d); err != nil || ok {
				return fmt.Errorf("Get of a missing key = %v, %v; want false, nil", ok, err)
			}
			if err := tx.Put(kind, "k", doc{"one", 1}); err != nil {
				return err
			}
			if ok, err := tx.Get(kind, "k", &d); err != nil || !ok || d != (doc{"one", 1}) {
				return fmt.Errorf("Get after Put in the same tx = %v, %v, %+v", ok, err, d)
			}
			return tx.Put(kind, "k", doc{"two", 2})
		})
		var d doc
		mustView(t, s, func(tx Tx) error {
			ok, err := tx.Get(kind, "k", &d)
			if err != nil || !ok {
				return fmt.Errorf("Get = %v, %v", ok, err)
			}
			// The same key under another kind is another document.
			if ok, err := tx.Get(kind+"-other", "k", &d); err != nil || ok {
				return fmt.Errorf("Get of another kind = %v, %v", ok, err)
			}
			return nil
		})
		if d != (doc{"two", 2}) {
			t.Fatalf("Put did not replace: got %+v", d)
		}
		mustUpdate(t, s, func(tx Tx) error {
			if ok, err := tx.Delete(kind, "k"); err != nil || !ok {
				return fmt.Errorf("Delete = %v, %v; want true", ok, err)
			}
			if ok, err := tx.Delete(kind, "k"); err != nil || ok {
				return fmt.Errorf("second Delete = %v, %v; want false", ok, err)
			}
			return nil
		})
		mustView(t, s, func(tx Tx) error {
			if ok, err := tx.Get(kind, "k", &d); err != nil || ok {
				return fmt.Errorf("Get after Delete = %v, %v", ok, err)
			}
			return nil
		})
	})

	t.Run("ScanOrder", func(t *testing.T) {
		kind := newKind(t, s)
		// Byte order, not a linguistic one: upper case before lower case and
		// punctuation by its code point.
		keys := []string{"A", "B", "Z", "a", "a-2", "a.b", "a/1", "a0", "a_3", "ab", "b", "z~"}
		putKeys(t, s, kind, shuffled(keys))
		got := scanKeys(t, s, kind, "", "", 0)
		if !slices.Equal(got, keys) {
			t.Fatalf("Scan order:\n got %q\nwant %q", got, keys)
		}
		mustView(t, s, func(tx Tx) error {
			vals, err := List[string](tx, kind, "")
			if err != nil {
				return err
			}
			if !slices.Equal(vals, keys) { // putKeys stores each key as its value
				return fmt.Errorf("List = %q", vals)
			}
			return nil
		})
	})

	t.Run("PrefixBounds", func(t *testing.T) {
		kind := newKind(t, s)
		keys := []string{"a", "a/", "a/1", "a/2", "a/2/x", "a0", "a~", "ab", "b", "a/\u00e9", "a/\u65e5"}
		putKeys(t, s, kind, shuffled(keys))
		for _, c := range []struct {
			prefix string
			want   []string
		}{
			{"a/", []string{"a/", "a/1", "a/2", "a/2/x", "a/\u00e9", "a/\u65e5"}},
			{"a/2", []string{"a/2", "a/2/x"}},
			{"a/2/", []string{"a/2/x"}},
			{"a", []string{"a", "a/", "a/1", "a/2", "a/2/x", "a/\u00e9", "a/\u65e5", "a0", "ab", "a~"}},
			{"b", []string{"b"}},
			{"c", nil},
			{"a/3", nil},
		} {
			if got := scanKeys(t, s, kind, c.prefix, "", 0); !slices.Equal(got, c.want) {
				t.Errorf("Scan prefix %q:\n got %q\nwant %q", c.prefix, got, c.want)
			}
		}
		if got := scanKeys(t, s, kind, "", "", 0); len(got) != len(keys) {
			t.Errorf("Scan with no prefix got %d keys, want %d", len(got), len(keys))
		}
	})

	t.Run("Pagination", func(t *testing.T) {
		kind := newKind(t, s)
		var keys []string
		for i := range 23 {
			keys = append(keys, fmt.Sprintf("c1/%03d", i))
		}
		putKeys(t, s, kind, append(shuffled(keys), "c0/x", "c2/x"))
		for _, limit := range []int{1, 3, 5, 23, 100} {
			var all []string
			after := ""
			for pages := 0; ; pages++ {
				if pages > 30 {
					t.Fatalf("limit %d: pagination does not end", limit)
				}
				page := scanKeys(t, s, kind, "c1/", after, limit)
				if len(page) > limit {
					t.Fatalf("limit %d: page of %d", limit, len(page))
				}
				all = append(all, page...)
				if len(page) < limit {
					break
				}
				after = page[len(page)-1]
			}
			if !slices.Equal(all, keys) {
				t.Fatalf("limit %d: pages joined:\n got %q\nwant %q", limit, all, keys)
			}
		}
		// after is exclusive and may lie outside the prefix.
		if got := scanKeys(t, s, kind, "c1/", "c1/020", 0); !slices.Equal(got, keys[21:]) {
			t.Errorf("after c1/020: %q", got)
		}
		if got := scanKeys(t, s, kind, "c1/", "c0/zzz", 2); !slices.Equal(got, keys[:2]) {
			t.Errorf("after below the prefix: %q", got)
		}
		if got := scanKeys(t, s, kind, "c1/", "c1/999", 0); got != nil {
			t.Errorf("after the last key: %q", got)
		}
		if got := scanKeys(t, s, kind, "c1/", "c2", 0); got != nil {
			t.Errorf("after above the prefix: %q", got)
		}
	})

	t.Run("ErrStop", func(t *testing.T) {
		kind := newKind(t, s)
		putKeys(t, s, kind, []string{"1", "2", "3", "4"})
		var seen []string
		mustView(t, s, func(tx Tx) error {
			return tx.Scan(kind, "", "", 0, func(k string, _ []byte) error {
				seen = append(seen, k)
				if k == "2" {
					return ErrStop
				}
				return nil
			})
		})
		if !slices.Equal(seen, []string{"1", "2"}) {
			t.Fatalf("ErrStop: saw %q", seen)
		}
		boom := errors.New("boom")
		err := s.View(ctx, func(tx Tx) error {
			return tx.Scan(kind, "", "", 0, func(string, []byte) error { return fmt.Errorf("wrapped: %w", boom) })
		})
		if !errors.Is(err, boom) {
			t.Fatalf("a callback's error = %v, want it returned", err)
		}
		// A failed Scan leaves the transaction usable.
		mustView(t, s, func(tx Tx) error {
			tx.Scan(kind, "", "", 0, func(string, []byte) error { return boom })
			var v string
			if ok, err := tx.Get(kind, "3", &v); !ok || err != nil || v != "3" {
				return fmt.Errorf("Get after a failed Scan = %v, %v, %q", ok, err, v)
			}
			return nil
		})
	})

	t.Run("ReadWriteInsideScan", func(t *testing.T) {
		// Callers look up and rewrite related documents while scanning
		// (the controller walks tasks and updates them).
		kind := newKind(t, s)
		putKeys(t, s, kind, []string{"1", "2", "3"})
		mustUpdate(t, s, func(tx Tx) error {
			return tx.Scan(kind, "", "", 0, func(k string, _ []byte) error {
				var v string
				if ok, err := tx.Get(kind, k, &v); err != nil || !ok {
					return fmt.Errorf("Get %s inside Scan = %v, %v", k, ok, err)
				}
				return tx.Put(kind, k, v+"!")
			})
		})
		mustView(t, s, func(tx Tx) error {
			vals, err := List[string](tx, kind, "")
			if err != nil {
				return err
			}
			if !slices.Equal(vals, []string{"1!", "2!", "3!"}) {
				return fmt.Errorf("after rewriting inside Scan: %q", vals)
			}
			return nil
		})
	})

	t.Run("Rollback", func(t *testing.T) {
		kind := newKind(t, s)
		putKeys(t, s, kind, []string{"keep"})
		boom := errors.New("boom")
		err := s.Update(ctx, func(tx Tx) error {
			if err := tx.Put(kind, "new", "x"); err != nil {
				return err
			}
			if _, err := tx.Delete(kind, "keep"); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("Update returned %v, want the callback's error", err)
		}
		if got := scanKeys(t, s, kind, "", "", 0); !slices.Equal(got, []string{"keep"}) {
			t.Fatalf("after a failed Update: %q, want only the old document", got)
		}
	})

	t.Run("ViewIsReadOnly", func(t *testing.T) {
		kind := newKind(t, s)
		err := s.View(ctx, func(tx Tx) error { return tx.Put(kind, "k", "v") })
		if err == nil {
			t.Error("Put inside View succeeded")
		}
		if got := scanKeys(t, s, kind, "", "", 0); got != nil {
			t.Fatalf("a Put inside View was stored: %q", got)
		}
	})

	t.Run("ConcurrentIncrements", func(t *testing.T) {
		kind := newKind(t, s)
		const workers, each = 16, 8
		var wg sync.WaitGroup
		errs := make(chan error, workers*each)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					errs <- s.Update(ctx, func(tx Tx) error {
						var n int
						if _, err := tx.Get(kind, "counter", &n); err != nil {
							return err
						}
						// Each worker also creates its own documents, so
						// inserts race with the counter's update.
						if err := tx.Put(kind, fmt.Sprintf("w%02d/%02d", w, i), n); err != nil {
							return err
						}
						return tx.Put(kind, "counter", n+1)
					})
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("concurrent Update: %v", err)
			}
		}
		var n int
		var seen []int
		mustView(t, s, func(tx Tx) error {
			if _, err := tx.Get(kind, "counter", &n); err != nil {
				return err
			}
			var err error
			seen, err = List[int](tx, kind, "w")
			return err
		})
		if n != workers*each {
			t.Fatalf("counter = %d after %d increments: updates were lost", n, workers*each)
		}
		// Every transaction read a distinct counter value: none ran on a
		// stale snapshot.
		sort.Ints(seen)
		for i, v := range seen {
			if v != i {
				t.Fatalf("values read by the transactions: %v", seen)
			}
		}
	})

	t.Run("ViewSeesOnlyCommitted", func(t *testing.T) {
		kind := newKind(t, s)
		putKeys(t, s, kind, []string{"old"})
		written, release := make(chan struct{}), make(chan struct{})
		done := make(chan error, 1)
		go func() {
			done <- s.Update(ctx, func(tx Tx) error {
				if err := tx.Put(kind, "new", "new"); err != nil {
					return err
				}
				select {
				case <-written:
				default:
					close(written)
				}
				<-release
				return nil
			})
		}()
		<-written
		// A reader must neither wait for the writer nor see its
		// uncommitted document.
		viewed := make(chan []string, 1)
		go func() { viewed <- scanKeys(t, s, kind, "", "", 0) }()
		select {
		case got := <-viewed:
			if !slices.Equal(got, []string{"old"}) {
				t.Errorf("View during an open Update saw %q", got)
			}
		case <-time.After(5 * time.Second):
			t.Error("View blocked behind an open Update")
			close(release)
			<-done
			return
		}
		close(release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if got := scanKeys(t, s, kind, "", "", 0); !slices.Equal(got, []string{"new", "old"}) {
			t.Fatalf("View after commit saw %q", got)
		}
	})

	t.Run("ViewIsASnapshot", func(t *testing.T) {
		kind := newKind(t, s)
		putKeys(t, s, kind, []string{"a", "b"})
		mustView(t, s, func(tx Tx) error {
			var v string
			if _, err := tx.Get(kind, "a", &v); err != nil {
				return err
			}
			// A write committed after the View's first read must not show
			// in its later reads, or a listing could mix two states.
			mustUpdate(t, s, func(tx Tx) error {
				if err := tx.Put(kind, "a", "a2"); err != nil {
					return err
				}
				return tx.Put(kind, "b", "b2")
			})
			if _, err := tx.Get(kind, "b", &v); err != nil {
				return err
			}
			if v != "b" {
				return fmt.Errorf("View read %q, committed after it began", v)
			}
			return nil
		})
	})

	t.Run("Reopen", func(t *testing.T) {
		kind := newKind(t, s)
		putKeys(t, s, kind, []string{"durable"})
		s.Close()
		s = open(t)
		if got := scanKeys(t, s, kind, "", "", 0); !slices.Equal(got, []string{"durable"}) {
			t.Fatalf("after reopening: %q", got)
		}
	})
}

// newKind returns a kind no other run uses and removes its documents after.
func newKind(t *testing.T, s Store) string {
	kind := "test-" + strings.ToLower(t.Name()[strings.LastIndex(t.Name(), "/")+1:]) + "-" + randomHex(4)
	t.Cleanup(func() {
		s.Update(context.Background(), func(tx Tx) error {
			var keys []string
			tx.Scan(kind, "", "", 0, func(k string, _ []byte) error { keys = append(keys, k); return nil })
			for _, k := range keys {
				tx.Delete(kind, k)
			}
			return nil
		})
	})
	return kind
}

func putKeys(t *testing.T, s Store, kind string, keys []string) {
	t.Helper()
	mustUpdate(t, s, func(tx Tx) error {
		for _, k := range keys {
			if err := tx.Put(kind, k, k); err != nil {
				return err
			}
		}
		return nil
	})
}

func scanKeys(t *testing.T, s Store, kind, prefix, after string, limit int) []string {
	t.Helper()
	var keys []string
	mustView(t, s, func(tx Tx) error {
		return tx.Scan(kind, prefix, after, limit, func(k string, data []byte) error {
			keys = append(keys, k)
			return nil
		})
	})
	return keys
}

func mustUpdate(t *testing.T, s Store, fn func(Tx) error) {
	t.Helper()
	if err := s.Update(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
}

func mustView(t *testing.T, s Store, fn func(Tx) error) {
	t.Helper()
	if err := s.View(context.Background(), fn); err != nil {
		t.Error(err)
	}
}

func shuffled(in []string) []string {
	out := slices.Clone(in)
	for i := len(out) - 1; i > 0; i-- {
		j, _ := rand.Int(rand.Reader, big.NewInt(int64(i+1)))
		out[i], out[j.Int64()] = out[j.Int64()], out[i]
	}
	return out
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
