// Package logs is Gantry's CloudWatch Logs: the Logs_20140328 JSON API and
// the store that both the API and the agents' awslogs capture write to.
//
// Events live in their own SQLite database (DataDir/logs.db), not in the
// state store: they arrive at thousands per second, are read by stream and
// time range, and would otherwise crowd the control plane's one writer.
package logs

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/state"
)

const schema = `
CREATE TABLE IF NOT EXISTS log_groups (
	id        INTEGER PRIMARY KEY,
	account   TEXT NOT NULL,
	region    TEXT NOT NULL,
	name      TEXT NOT NULL,
	created   INTEGER NOT NULL,
	retention INTEGER,
	kms       TEXT NOT NULL DEFAULT '',
	class     TEXT NOT NULL DEFAULT 'STANDARD',
	tags      TEXT NOT NULL DEFAULT '{}',
	UNIQUE (account, region, name)
);
CREATE TABLE IF NOT EXISTS log_streams (
	id          INTEGER PRIMARY KEY,
	group_id    INTEGER NOT NULL,
	name        TEXT NOT NULL,
	created     INTEGER NOT NULL,
	first_ts    INTEGER,
	last_ts     INTEGER,
	last_ingest INTEGER,
	bytes       INTEGER NOT NULL DEFAULT 0,
	-- the end of the last agent batch stored, so a batch re-sent after a
	-- crash between storing and acknowledging is not stored twice
	agent_offset INTEGER NOT NULL DEFAULT -1,
	UNIQUE (group_id, name)
);
CREATE TABLE IF NOT EXISTS log_events (
	id        INTEGER PRIMARY KEY,
	group_id  INTEGER NOT NULL,
	stream_id INTEGER NOT NULL,
	ts        INTEGER NOT NULL,
	ingest    INTEGER NOT NULL,
	message   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS log_events_by_stream ON log_events (stream_id, ts, id);
CREATE INDEX IF NOT EXISTS log_events_by_group ON log_events (group_id, ts, id);
`

// Store holds log groups, streams and events.
type Store struct {
	write *sql.DB // one connection: SQLite has one writer anyway
	read  *sql.DB
	Now   func() time.Time

	sweep chan struct{}
	done  chan struct{}
	wg    sync.WaitGroup
}

// Open opens (creating if needed) the log database at path and starts the
// retention sweeper.
func Open(path string) (*Store, error) {
	w, r, err := state.OpenSQLiteDB(path, schema, 8)
	if err != nil {
		return nil, fmt.Errorf("logs: %w", err)
	}
	s := &Store{write: w, read: r, sweep: make(chan struct{}, 1), done: make(chan struct{})}
	s.wg.Add(1)
	go s.sweeper()
	return s, nil
}

func (s *Store) Close() error {
	close(s.done)
	s.wg.Wait()
	return errors.Join(s.write.Close(), s.read.Close())
}

func (s *Store) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Scope is the account and region a log group belongs to.
type Scope struct{ Account, Region string }

type group struct {
	ID        int64
	Name      string
	Created   int64
	Retention *int32
	KMS       string
	Class     string
	Tags      map[string]string
	Bytes     int64
}

type stream struct {
	ID         int64
	Name       string
	Created    int64
	FirstTS    *int64
	LastTS     *int64
	LastIngest *int64
	Bytes      int64
}

var (
	errGroupNotFound  = errNotFound("The specified log group does not exist.")
	errStreamNotFound = errNotFound("The specified log stream does not exist.")
	errGroupExists    = errExists("The specified log group already exists")
	errStreamExists   = errExists("The specified log stream already exists")
)

// ErrGroupNotFound is returned to the agent when its log group is gone.
var ErrGroupNotFound = errGroupNotFound

func (s *Store) createGroup(ctx context.Context, sc Scope, name, kms, class string, tags map[string]string) error {
	tj, _ := json.Marshal(orEmpty(tags))
	_, err := s.write.ExecContext(ctx, `INSERT INTO log_groups (account, region, name, created, kms, class, tags) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		sc.Account, sc.Region, name, s.now().UnixMilli(), kms, class, string(tj))
	if isUnique(err) {
		return errGroupExists
	}
	return diskFull(err)
}

// DiskFullError is a write refused because logs.db's file system is full.
// SQLite rolls the transaction back and the database stays whole, so the
// same write succeeds once there is room: clients get
// ServiceUnavailableException (HTTP 503), which they retry, and the agent
// keeps the lines in its spool and retries.
type DiskFullError struct{ Err error }

func (e *DiskFullError) Error() string {
	return "ServiceUnavailableException: the log store is out of disk space; retry when space is freed (" + e.Err.Error() + ")"
}
func (e *DiskFullError) Unwrap() error { return e.Err }

// As lets the API answer with the AWS error.
func (e *DiskFullError) As(target any) bool {
	if t, ok := target.(**awsapi.Error); ok {
		*t = &awsapi.Error{Code: "ServiceUnavailableException", Message: "The log store is out of disk space; retry when space is freed.", Status: http.StatusServiceUnavailable}
		return true
	}
	return false
}

// diskFull recognises SQLITE_FULL (13, with any extended code) and ENOSPC.
func diskFull(err error) error {
	if err == nil {
		return nil
	}
	var coded interface{ Code() int }
	if errors.As(err, &coded) && coded.Code()&0xff == 13 || errors.Is(err, syscall.ENOSPC) ||
		strings.Contains(err.Error(), "database or disk is full") || strings.Contains(err.Error(), "no space left on device") {
		return &DiskFullError{err}
	}
	return err
}

func isUnique(err error) bool {
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}

func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

const groupCols = `id, name, created, retention, kms, class, tags,
	(SELECT COALESCE(SUM(bytes), 0) FROM log_streams WHERE group_id = log_groups.id)`

func scanGroup(row interface{ Scan(...any) error }) (*group, error) {
	g := &group{}
	var ret sql.NullInt32
	var tags string
	if err := row.Scan(&g.ID, &g.Name, &g.Created, &ret, &g.KMS, &g.Class, &tags, &g.Bytes); err != nil {
		return nil, err
	}
	if ret.Valid {
		g.Retention = &ret.Int32
	}
	json.Unmarshal([]byte(tags), &g.Tags)
	return g, nil
}

func (s *Store) group(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, sc Scope, name string) (*group, error) {
	g, err := scanGroup(q.QueryRowContext(ctx, `SELECT `+groupCols+` FROM log_groups WHERE account = ? AND region = ? AND name = ?`, sc.Account, sc.Region, name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errGroupNotFound
	}
	return g, err
}

// groups lists a scope's groups by name after `after`, at most limit+1 of
// them so the caller can tell whether there are more.
func (s *Store) groups(ctx context.Context, sc Scope, prefix, contains, after string, limit int) ([]*group, error) {
	q := `SELECT ` + groupCols + ` FROM log_groups WHERE account = ? AND region = ? AND name > ?`
	args := []any{sc.Account, sc.Region, after}
	if prefix != "" {
		q += ` AND substr(name, 1, ?) = ?`
		args = append(args, len(prefix), prefix)
	}
	if contains != "" {
		// logGroupNamePattern is a case-insensitive substring match.
		q += ` AND instr(lower(name), lower(?)) > 0`
		args = append(args, contains)
	}
	q += ` ORDER BY name LIMIT ?`
	args = append(args, limit+1)
	rows, err := s.read.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*group
	for rows.Next() {
		g, err := scanGroup(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, rows.Err()
}

func (s *Store) deleteGroup(ctx context.Context, sc Scope, name string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		g, err := s.group(ctx, tx, sc, name)
		if err != nil {
			return err
		}
		for _, q := range []string{`DELETE FROM log_events WHERE group_id = ?`, `DELETE FROM log_streams WHERE group_id = ?`, `DELETE FROM log_groups WHERE id = ?`} {
			if _, err := tx.ExecContext(ctx, q, g.ID); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *Store) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return diskFull(err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return diskFull(err)
	}
	return diskFull(tx.Commit())
}

// updateGroup changes a group's retention or tags.
func (s *Store) updateGroup(ctx context.Context, sc Scope, name string, change func(g *group)) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		g, err := s.group(ctx, tx, sc, name)
		if err != nil {
			return err
		}
		change(g)
		tj, _ := json.Marshal(orEmpty(g.Tags))
		_, err = tx.ExecContext(ctx, `UPDATE log_groups SET retention = ?, tags = ? WHERE id = ?`, g.Retention, string(tj), g.ID)
		return err
	})
	if err == nil {
		s.Sweep()
	}
	return err
}

func (s *Store) createStream(ctx context.Context, sc Scope, groupName, name string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		g, err := s.group(ctx, tx, sc, groupName)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO log_streams (group_id, name, created) VALUES (?, ?, ?)`, g.ID, name, s.now().UnixMilli())
		if isUnique(err) {
			return errStreamExists
		}
		return err
	})
}

const streamCols = `id, name, created, first_ts, last_ts, last_ingest, bytes`

func scanStream(row interface{ Scan(...any) error }) (*stream, error) {
	st := &stream{}
	var first, last, ingest sql.NullInt64
	if err := row.Scan(&st.ID, &st.Name, &st.Created, &first, &last, &ingest, &st.Bytes); err != nil {
		return nil, err
	}
	if first.Valid {
		st.FirstTS, st.LastTS, st.LastIngest = &first.Int64, &last.Int64, &ingest.Int64
	}
	return st, nil
}

func (s *Store) stream(ctx context.Context, groupID int64, name string) (*stream, error) {
	st, err := scanStream(s.read.QueryRowContext(ctx, `SELECT `+streamCols+` FROM log_streams WHERE group_id = ? AND name = ?`, groupID, name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errStreamNotFound
	}
	return st, err
}

type streamQuery struct {
	prefix     string
	byLastTime bool
	descending bool
	offset     int
	limit      int
}

func (s *Store) streams(ctx context.Context, groupID int64, q streamQuery) ([]*stream, error) {
	sqlq := `SELECT ` + streamCols + ` FROM log_streams WHERE group_id = ?`
	args := []any{groupID}
	if q.prefix != "" {
		sqlq += ` AND substr(name, 1, ?) = ?`
		args = append(args, len(q.prefix), q.prefix)
	}
	dir := "ASC"
	if q.descending {
		dir = "DESC"
	}
	if q.byLastTime {
		sqlq += ` ORDER BY COALESCE(last_ts, 0) ` + dir + `, name ` + dir
	} else {
		sqlq += ` ORDER BY name ` + dir
	}
	sqlq += ` LIMIT ? OFFSET ?`
	args = append(args, q.limit+1, q.offset)
	rows, err := s.read.QueryContext(ctx, sqlq, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*stream
	for rows.Next() {
		st, err := scanStream(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, rows.Err()
}

func (s *Store) deleteStream(ctx context.Context, sc Scope, groupName, name string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		g, err := s.group(ctx, tx, sc, groupName)
		if err != nil {
			return err
		}
		var id int64
		if err := tx.QueryRowContext(ctx, `SELECT id FROM log_streams WHERE group_id = ? AND name = ?`, g.ID, name).Scan(&id); errors.Is(err, sql.ErrNoRows) {
			return errStreamNotFound
		} else if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM log_events WHERE stream_id = ?`, id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM log_streams WHERE id = ?`, id)
		return err
	})
}

// Event is one stored log event.
type Event struct {
	ID        int64
	Timestamp int64 // ms
	Ingest    int64 // ms
	Message   string
	StreamID  int64
}

// putEvents stores events, already validated and in time order, in one
// transaction. With agentOffset >= 0 the events come from an agent's spool
// and offsets[i] is each one's position there: those at or below the
// stream's recorded offset were stored before and are skipped.
func (s *Store) putEvents(ctx context.Context, sc Scope, groupName, streamName string, createStream bool, events []Event, offsets []int64) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		g, err := s.group(ctx, tx, sc, groupName)
		if err != nil {
			return err
		}
		var sid, seen int64
		err = tx.QueryRowContext(ctx, `SELECT id, agent_offset FROM log_streams WHERE group_id = ? AND name = ?`, g.ID, streamName).Scan(&sid, &seen)
		if errors.Is(err, sql.ErrNoRows) && createStream {
			seen = -1
			err = tx.QueryRowContext(ctx, `INSERT INTO log_streams (group_id, name, created) VALUES (?, ?, ?) RETURNING id`, g.ID, streamName, s.now().UnixMilli()).Scan(&sid)
		} else if errors.Is(err, sql.ErrNoRows) {
			return errStreamNotFound
		}
		if err != nil {
			return err
		}
		ins, err := tx.PrepareContext(ctx, `INSERT INTO log_events (group_id, stream_id, ts, ingest, message) VALUES (?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer ins.Close()
		ingest := s.now().UnixMilli()
		var n, bytes, first, last int64
		for i, e := range events {
			if offsets != nil {
				if offsets[i] <= seen {
					continue
				}
				seen = offsets[i]
			}
			if _, err := ins.ExecContext(ctx, g.ID, sid, e.Timestamp, ingest, e.Message); err != nil {
				return err
			}
			if n == 0 || e.Timestamp < first {
				first = e.Timestamp
			}
			last = max(last, e.Timestamp)
			n++
			bytes += int64(len(e.Message))
		}
		if n == 0 {
			return nil
		}
		_, err = tx.ExecContext(ctx, `UPDATE log_streams SET
			first_ts = MIN(COALESCE(first_ts, ?1), ?1), last_ts = MAX(COALESCE(last_ts, ?2), ?2),
			last_ingest = ?3, bytes = bytes + ?4, agent_offset = ?5 WHERE id = ?6`,
			first, last, ingest, bytes, seen, sid)
		return err
	})
}

// position orders events: by timestamp, then by arrival.
type position struct{ TS, ID int64 }

func (p position) less(q position) bool { return p.TS < q.TS || p.TS == q.TS && p.ID < q.ID }

type eventQuery struct {
	groupID   int64
	streamIDs []int64 // nil: every stream of the group
	prefix    string  // stream name prefix
	after     *position
	before    *position
	start     *int64 // inclusive
	end       *int64 // exclusive
	backward  bool
	limit     int
}

func (s *Store) events(ctx context.Context, q eventQuery) ([]Event, error) {
	if q.streamIDs != nil && len(q.streamIDs) == 0 {
		return nil, nil
	}
	var where []string
	var args []any
	if len(q.streamIDs) == 1 {
		where = append(where, `e.stream_id = ?`)
		args = append(args, q.streamIDs[0])
	} else {
		where = append(where, `e.group_id = ?`)
		args = append(args, q.groupID)
		if q.streamIDs != nil {
			ph := strings.TrimSuffix(strings.Repeat("?,", len(q.streamIDs)), ",")
			where = append(where, `e.stream_id IN (`+ph+`)`)
			for _, id := range q.streamIDs {
				args = append(args, id)
			}
		}
		if q.prefix != "" {
			where = append(where, `e.stream_id IN (SELECT id FROM log_streams WHERE group_id = ? AND name >= ? AND substr(name, 1, ?) = ?)`)
			args = append(args, q.groupID, q.prefix, len(q.prefix), q.prefix)
		}
	}
	// The time bounds and the paging position become one lower and one
	// upper row-value bound: SQLite ranges the index on one of each, and
	// with two it may pick the loose one and scan from the group's start.
	// Ids start at 1, so (start, 0) is just before every event at start.
	lo, hi := q.after, q.before
	if q.start != nil && (lo == nil || lo.less(position{*q.start, 0})) {
		lo = &position{*q.start, 0}
	}
	if q.end != nil && (hi == nil || (position{*q.end, 0}).less(*hi)) {
		hi = &position{*q.end, 0}
	}
	if lo != nil {
		where = append(where, `(e.ts, e.id) > (?, ?)`)
		args = append(args, lo.TS, lo.ID)
	}
	if hi != nil {
		where = append(where, `(e.ts, e.id) < (?, ?)`)
		args = append(args, hi.TS, hi.ID)
	}
	order := `e.ts, e.id`
	if q.backward {
		order = `e.ts DESC, e.id DESC`
	}
	args = append(args, q.limit)
	// No join for the stream's name: a filter scans far more events than
	// it returns, and callers look names up for the few they keep.
	rows, err := s.read.QueryContext(ctx, `SELECT e.id, e.ts, e.ingest, e.message, e.stream_id FROM log_events e
		WHERE `+strings.Join(where, " AND ")+` ORDER BY `+order+` LIMIT ?`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		if err := rows.Scan(&e.ID, &e.Timestamp, &e.Ingest, &e.Message, &e.StreamID); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// streamNames resolves stream ids to names, remembering them for one
// request.
type streamNames struct {
	s     *Store
	names map[int64]string
}

func (n *streamNames) name(ctx context.Context, id int64) (string, error) {
	if v, ok := n.names[id]; ok {
		return v, nil
	}
	var v string
	if err := n.s.read.QueryRowContext(ctx, `SELECT name FROM log_streams WHERE id = ?`, id).Scan(&v); err != nil {
		return "", err
	}
	if n.names == nil {
		n.names = map[int64]string{}
	}
	n.names[id] = v
	return v, nil
}

// Sweep asks the sweeper to apply retention now rather than at its next tick.
func (s *Store) Sweep() {
	select {
	case s.sweep <- struct{}{}:
	default:
	}
}

// SweepInterval is how often retention is applied without being asked.
var SweepInterval = 10 * time.Minute

func (s *Store) sweeper() {
	defer s.wg.Done()
	t := time.NewTicker(SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		case <-s.sweep:
		}
		s.expire(context.Background())
	}
}

// expire deletes the events older than their group's retention, in small
// transactions so that ingest is never held up for long.
func (s *Store) expire(ctx context.Context) {
	rows, err := s.read.QueryContext(ctx, `SELECT id, retention FROM log_groups WHERE retention IS NOT NULL`)
	if err != nil {
		return
	}
	type gr struct{ id, days int64 }
	var gs []gr
	for rows.Next() {
		var g gr
		if rows.Scan(&g.id, &g.days) == nil {
			gs = append(gs, g)
		}
	}
	rows.Close()
	now := s.now()
	for _, g := range gs {
		cutoff := now.Add(-time.Duration(g.days) * 24 * time.Hour).UnixMilli()
		for s.expireBatch(ctx, g.id, cutoff) {
		}
	}
}

// expireBatch deletes some of a group's expired events and takes their size
// off their streams; it says whether there may be more.
func (s *Store) expireBatch(ctx context.Context, groupID, cutoff int64) bool {
	more := false
	err := s.tx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `DELETE FROM log_events WHERE id IN (SELECT id FROM log_events WHERE group_id = ? AND ts < ? LIMIT 5000)
			RETURNING stream_id, length(CAST(message AS BLOB))`, groupID, cutoff)
		if err != nil {
			return err
		}
		freed := map[int64]int64{}
		for rows.Next() {
			var sid, n int64
			if err := rows.Scan(&sid, &n); err != nil {
				rows.Close()
				return err
			}
			freed[sid] += n
			more = true
		}
		rows.Close()
		for sid, n := range freed {
			if _, err := tx.ExecContext(ctx, `UPDATE log_streams SET bytes = MAX(bytes - ?, 0) WHERE id = ?`, n, sid); err != nil {
				return err
			}
		}
		return nil
	})
	return err == nil && more
}
