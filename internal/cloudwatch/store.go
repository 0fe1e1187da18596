// Package cloudwatch is CloudWatch metrics for Gantry: AWS/ECS CPU and
// memory utilization computed from the agents' cgroup samples, custom
// metrics from PutMetricData, and the read side (GetMetricStatistics,
// GetMetricData, ListMetrics) on a SQLite database of its own, metrics.db.
package cloudwatch

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"github.com/gantry-dev/gantry/internal/state"
	"math"
	"sort"
	"strings"
	"sync"
	"time"
)

// Retention is how long datapoints are kept: CloudWatch keeps data at
// one-minute resolution for 15 days.
const Retention = 15 * 24 * time.Hour

const schema = `
CREATE TABLE IF NOT EXISTS metrics (
	id        INTEGER PRIMARY KEY,
	account   TEXT NOT NULL,
	region    TEXT NOT NULL,
	namespace TEXT NOT NULL,
	name      TEXT NOT NULL,
	dims      TEXT NOT NULL, -- JSON [[name,value],...] sorted by name
	last      INTEGER NOT NULL, -- ms of the newest datapoint
	UNIQUE (account, region, namespace, name, dims)
);
CREATE TABLE IF NOT EXISTS datapoints (
	metric INTEGER NOT NULL,
	ts     INTEGER NOT NULL, -- ms since the epoch
	unit   TEXT NOT NULL,
	sum    REAL NOT NULL,
	count  REAL NOT NULL,
	min    REAL NOT NULL,
	max    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS datapoints_by_time ON datapoints (metric, ts);
`

// Dim is one dimension of a metric.
type Dim struct{ Name, Value string }

// MetricID names a metric in an account and region.
type MetricID struct {
	Account, Region, Namespace, Name string
	Dims                             []Dim // sorted by name
}

func (m MetricID) dimsKey() string {
	ds := append([]Dim(nil), m.Dims...)
	sort.Slice(ds, func(i, j int) bool { return ds[i].Name < ds[j].Name })
	pairs := make([][2]string, len(ds))
	for i, d := range ds {
		pairs[i] = [2]string{d.Name, d.Value}
	}
	b, _ := json.Marshal(pairs)
	return string(b)
}

func parseDims(s string) []Dim {
	var pairs [][2]string
	json.Unmarshal([]byte(s), &pairs)
	out := make([]Dim, len(pairs))
	for i, p := range pairs {
		out[i] = Dim{p[0], p[1]}
	}
	return out
}

// Stats is a statistic set: what one datapoint, or a period's worth of
// them, sums up to.
type Stats struct {
	Sum, Count, Min, Max float64
}

// Add merges o into s.
func (s *Stats) Add(o Stats) {
	if s.Count == 0 {
		*s = o
		return
	}
	s.Sum += o.Sum
	s.Count += o.Count
	s.Min = math.Min(s.Min, o.Min)
	s.Max = math.Max(s.Max, o.Max)
}

// Of is the statistic set of values.
func Of(values ...float64) Stats {
	var s Stats
	for _, v := range values {
		s.Add(Stats{Sum: v, Count: 1, Min: v, Max: v})
	}
	return s
}

// Point is a datapoint to store.
type Point struct {
	Metric MetricID
	Time   time.Time
	Unit   string
	Stats  Stats
}

// Store keeps datapoints in metrics.db.
type Store struct {
	write, read *sql.DB
	mu          sync.Mutex
	ids         map[string]int64 // metric id by account|region|ns|name|dims
	done        chan struct{}
	wg          sync.WaitGroup
}

// Open opens (creating) the metrics database at path and starts pruning
// datapoints older than Retention.
func Open(path string) (*Store, error) {
	w, r, err := state.OpenSQLiteDB(path, schema, 4)
	if err != nil {
		return nil, fmt.Errorf("cloudwatch: %w", err)
	}
	s := &Store{write: w, read: r, ids: map[string]int64{}, done: make(chan struct{})}
	s.wg.Add(1)
	go s.pruner()
	return s, nil
}

func (s *Store) Close() error {
	close(s.done)
	s.wg.Wait()
	return errorsJoin(s.write.Close(), s.read.Close())
}

func errorsJoin(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func (s *Store) pruner() {
	defer s.wg.Done()
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		s.Prune(context.Background(), time.Now().Add(-Retention))
		select {
		case <-t.C:
		case <-s.done:
			return
		}
	}
}

// Prune deletes datapoints older than before, and metrics left without any.
func (s *Store) Prune(ctx context.Context, before time.Time) error {
	ms := before.UnixMilli()
	if _, err := s.write.ExecContext(ctx, `DELETE FROM datapoints WHERE ts < ?`, ms); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	res, err := s.write.ExecContext(ctx, `DELETE FROM metrics WHERE last < ?`, ms)
	if err == nil {
		if n, _ := res.RowsAffected(); n > 0 {
			s.ids = map[string]int64{}
		}
	}
	return err
}

// Put stores points in one transaction.
func (s *Store) Put(ctx context.Context, points []Point) error {
	if len(points) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	fresh := map[string]int64{}
	for _, p := range points {
		m := p.Metric
		dims := m.dimsKey()
		key := strings.Join([]string{m.Account, m.Region, m.Namespace, m.Name, dims}, "\x00")
		ts := p.Time.UnixMilli()
		id, ok := s.ids[key]
		if !ok {
			id, ok = fresh[key]
		}
		if !ok {
			err := tx.QueryRowContext(ctx, `INSERT INTO metrics (account, region, namespace, name, dims, last) VALUES (?,?,?,?,?,?)
				ON CONFLICT (account, region, namespace, name, dims) DO UPDATE SET last = max(last, excluded.last) RETURNING id`,
				m.Account, m.Region, m.Namespace, m.Name, dims, ts).Scan(&id)
			if err != nil {
				return err
			}
			fresh[key] = id
		} else if _, err := tx.ExecContext(ctx, `UPDATE metrics SET last = max(last, ?) WHERE id = ?`, ts, id); err != nil {
			return err
		}
		st := p.Stats
		if _, err := tx.ExecContext(ctx, `INSERT INTO datapoints (metric, ts, unit, sum, count, min, max) VALUES (?,?,?,?,?,?,?)`,
			id, ts, p.Unit, st.Sum, st.Count, st.Min, st.Max); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	for k, v := range fresh {
		s.ids[k] = v
	}
	return nil
}

// Bucket is the statistics of one period.
type Bucket struct {
	Start time.Time
	Unit  string
	Stats Stats
}

// Query returns the statistics of m per period for datapoints in
// [start, end), oldest first. As CloudWatch does, start is first rounded
// down to the minute (to the period for periods under a minute) and the
// periods follow on from it.
// A non-empty unit keeps only datapoints stored with that unit.
func (s *Store) Query(ctx context.Context, m MetricID, start, end time.Time, period time.Duration, unit string) ([]Bucket, error) {
	var id int64
	err := s.read.QueryRowContext(ctx, `SELECT id FROM metrics WHERE account=? AND region=? AND namespace=? AND name=? AND dims=?`,
		m.Account, m.Region, m.Namespace, m.Name, m.dimsKey()).Scan(&id)
	if err == sql.ErrNoRows {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if period >= time.Minute {
		start = start.Truncate(time.Minute)
	} else {
		start = start.Truncate(period)
	}
	origin := start.UnixMilli()
	q := `SELECT ts, unit, sum, count, min, max FROM datapoints WHERE metric = ? AND ts >= ? AND ts < ?`
	args := []any{id, origin, end.UnixMilli()}
	if unit != "" {
		q += ` AND unit = ?`
		args = append(args, unit)
	}
	rows, err := s.read.QueryContext(ctx, q+` ORDER BY ts`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	pms := period.Milliseconds()
	var out []Bucket
	for rows.Next() {
		var ts int64
		var u string
		var st Stats
		if err := rows.Scan(&ts, &u, &st.Sum, &st.Count, &st.Min, &st.Max); err != nil {
			return nil, err
		}
		b := ts - (ts-origin)%pms
		if n := len(out); n > 0 && out[n-1].Start.UnixMilli() == b {
			out[n-1].Stats.Add(st)
			continue
		}
		out = append(out, Bucket{Start: time.UnixMilli(b).UTC(), Unit: u, Stats: st})
	}
	return out, rows.Err()
}

// Metrics lists the metrics of an account and region with a datapoint at
// or after since, in a stable order.
func (s *Store) Metrics(ctx context.Context, account, region string, since time.Time) ([]MetricID, error) {
	rows, err := s.read.QueryContext(ctx, `SELECT namespace, name, dims FROM metrics WHERE account=? AND region=? AND last >= ? ORDER BY namespace, name, dims`,
		account, region, since.UnixMilli())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []MetricID
	for rows.Next() {
		m := MetricID{Account: account, Region: region}
		var dims string
		if err := rows.Scan(&m.Namespace, &m.Name, &dims); err != nil {
			return nil, err
		}
		m.Dims = parseDims(dims)
		out = append(out, m)
	}
	return out, rows.Err()
}

// Aggregate is the statistic set of m's datapoints in [start, end); ok is
// false when there are none (an alarm's missing data).
func (s *Store) Aggregate(ctx context.Context, m MetricID, start, end time.Time) (st Stats, ok bool, err error) {
	var count sql.NullFloat64
	var sum, mn, mx sql.NullFloat64
	err = s.read.QueryRowContext(ctx, `SELECT sum(d.sum), sum(d.count), min(d.min), max(d.max) FROM datapoints d JOIN metrics m ON m.id = d.metric
		WHERE m.account=? AND m.region=? AND m.namespace=? AND m.name=? AND m.dims=? AND d.ts >= ? AND d.ts < ?`,
		m.Account, m.Region, m.Namespace, m.Name, m.dimsKey(), start.UnixMilli(), end.UnixMilli()).Scan(&sum, &count, &mn, &mx)
	if err != nil || !count.Valid || count.Float64 <= 0 {
		return Stats{}, false, err
	}
	return Stats{Sum: sum.Float64, Count: count.Float64, Min: mn.Float64, Max: mx.Float64}, true, nil
}

// Statistic is one of SampleCount, Average, Sum, Minimum, Maximum of st.
func Statistic(name string, st Stats) float64 { return statValue(name, st) }
