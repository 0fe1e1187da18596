package billing

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/shopspring/decimal"

	"github.com/gantry-dev/gantry/internal/state"
)

// Ledger holds every usage record in memory, compactly, for reports: a
// report over a million records is a scan of a slice with integer sums.
// The store stays the truth; the ledger is loaded from it at start and then
// kept in step by the meter (which meters every task, whichever server
// started it, so servers sharing a store each see all usage).
type Ledger struct {
	mu      sync.RWMutex
	strs    []string
	ids     map[string]uint32
	entries []entry
	index   map[string]int
}

type entry struct {
	live      bool
	hour      int64
	account   uint32
	region    uint32
	cluster   uint32
	service   uint32
	family    uint32
	task      uint32
	capacity  uint32
	arch      uint32
	startedBy uint32
	group     uint32
	revision  int32
	tags      []uint32 // key, value pairs
	n         uint8
	lines     [3]lineE
}

type lineE struct {
	ut   uint32
	kind uint8 // index into kinds
	qty  int64
	cost int64 // 1e-10 USD
}

var kinds = [3]string{KindVCPU, KindMemory, KindStorage}

func kindIndex(k string) uint8 {
	for i, v := range kinds {
		if v == k {
			return uint8(i)
		}
	}
	return 0
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger {
	l := &Ledger{ids: map[string]uint32{}, index: map[string]int{}}
	l.intern("")
	return l
}

func (l *Ledger) intern(s string) uint32 {
	if id, ok := l.ids[s]; ok {
		return id
	}
	id := uint32(len(l.strs))
	l.strs = append(l.strs, s)
	l.ids[s] = id
	return id
}

// Load reads every usage record from the store, a page at a time.
func (l *Ledger) Load(ctx context.Context, st state.Store) error {
	const page = 5000
	after := ""
	for {
		var recs []*UsageRecord
		last := ""
		err := st.View(ctx, func(tx state.Tx) error {
			recs, last = recs[:0], ""
			return tx.Scan(KindUsage, "", after, page, func(key string, data []byte) error {
				var r UsageRecord
				if err := json.Unmarshal(data, &r); err != nil {
					return fmt.Errorf("usage record %s: %w", key, err)
				}
				recs = append(recs, &r)
				last = key
				return nil
			})
		})
		if err != nil {
			return err
		}
		l.Apply(recs, nil)
		if len(recs) < page {
			return nil
		}
		after = last
	}
}

// Len is the number of records held.
func (l *Ledger) Len() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.index)
}

// Apply stores records (replacing those with the same key) and drops keys.
func (l *Ledger) Apply(puts []*UsageRecord, dels []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range puts {
		e := entry{live: true, hour: r.Hour,
			account: l.intern(r.Account), region: l.intern(r.Region), cluster: l.intern(r.Cluster),
			service: l.intern(r.Service), family: l.intern(r.Family), task: l.intern(r.TaskARN),
			capacity: l.intern(r.Capacity), arch: l.intern(r.Arch), startedBy: l.intern(r.StartedBy),
			group: l.intern(r.Group), revision: r.Revision}
		if len(r.Tags) > 0 {
			keys := make([]string, 0, len(r.Tags))
			for k := range r.Tags {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				e.tags = append(e.tags, l.intern(k), l.intern(r.Tags[k]))
			}
		}
		for _, ln := range r.Lines {
			if int(e.n) == len(e.lines) {
				break
			}
			e.lines[e.n] = lineE{ut: l.intern(ln.UsageType), kind: kindIndex(ln.Kind), qty: ln.Qty, cost: costUnits(ln.Cost)}
			e.n++
		}
		key := r.Key()
		if i, ok := l.index[key]; ok {
			l.entries[i] = e
			continue
		}
		l.index[key] = len(l.entries)
		l.entries = append(l.entries, e)
	}
	for _, key := range dels {
		if i, ok := l.index[key]; ok {
			l.entries[i].live = false
			delete(l.index, key)
		}
	}
}

var tenTo10 = decimal.New(1, CostScale)

func costUnits(s string) int64 {
	d, err := decimal.NewFromString(s)
	if err != nil {
		return 0
	}
	return d.Mul(tenTo10).Round(0).IntPart()
}

// Dimensions a report can group by.
const (
	DimCluster   = "cluster"
	DimService   = "service"
	DimFamily    = "family"
	DimTask      = "task"
	DimTag       = "tag" // with Key
	DimDay       = "day"
	DimHour      = "hour"
	DimMonth     = "month"
	DimUsageType = "usage-type"
	DimAccount   = "account"
	DimRegion    = "region"
	DimCapacity  = "capacity"
	DimAWSSvc    = "aws-service" // the constant Cost Explorer SERVICE
)

// AWSServiceName is how Cost Explorer names the service Fargate bills under.
const AWSServiceName = "Amazon Elastic Container Service"

// Dim is one grouping level.
type Dim struct {
	Kind string
	Key  string // tag key for DimTag
}

// ParseDim reads a --group-by value: cluster, service, family, task,
// tag:KEY, day, hour, month, usage-type.
func ParseDim(s string) (Dim, error) {
	if k, ok := strings.CutPrefix(s, "tag:"); ok {
		if k == "" {
			return Dim{}, fmt.Errorf("group-by tag: needs a tag key (tag:KEY)")
		}
		return Dim{Kind: DimTag, Key: k}, nil
	}
	switch s {
	case DimCluster, DimService, DimFamily, DimTask, DimDay, DimHour, DimMonth, DimUsageType, DimCapacity:
		return Dim{Kind: s}, nil
	}
	return Dim{}, fmt.Errorf("unknown group-by %q: use cluster, service, family, task, tag:KEY, day, hour, month, usage-type or capacity", s)
}

func (d Dim) String() string {
	if d.Kind == DimTag {
		return "tag:" + d.Key
	}
	return d.Kind
}

func (d Dim) perLine() bool { return d.Kind == DimUsageType }

// Query selects and groups usage records.
type Query struct {
	Account string // "" for every account
	From    time.Time
	To      time.Time // exclusive; hours whose start is in [From, To)
	GroupBy []Dim     // at most 4
	Filter  *Filter
	// Cluster and Tag (key=value) narrow the records (budgets' scopes).
	Cluster        string
	TagKey, TagVal string
}

// Agg is the sum of a group's usage.
type Agg struct {
	Qty  [3]int64 // by kind: vcpu, mem, eph (unit-milliseconds)
	Cost int64    // 1e-10 USD
}

func (a *Agg) add(ln *lineE) {
	a.Qty[ln.kind] += ln.qty
	a.Cost += ln.cost
}

func (a *Agg) plus(b *Agg) {
	for i := range a.Qty {
		a.Qty[i] += b.Qty[i]
	}
	a.Cost += b.Cost
}

// CostDecimal is the group's cost in USD.
func (a *Agg) CostDecimal() decimal.Decimal { return decimal.New(a.Cost, -CostScale) }

// Hours is the group's quantity of kind in unit-hours (10 places).
func (a *Agg) Hours(kind int) decimal.Decimal { return Hours(kinds[kind], a.Qty[kind], CostScale) }

// Group is one row of a result.
type Group struct {
	Keys []string
	Agg
	raw [4]int64
}

// Result is a grouped report with its total.
type Result struct {
	Groups []Group
	Total  Agg
}

type groupKey [4]int64

// Run answers q.
func (l *Ledger) Run(q Query) (*Result, error) {
	if len(q.GroupBy) > 4 {
		return nil, fmt.Errorf("at most 4 group-by levels")
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	from, to := q.From.Unix(), q.To.Unix()
	if q.To.IsZero() {
		to = 1 << 62
	}
	if q.From.IsZero() {
		from = -1 << 62
	}
	acct, anyAcct := uint32(0), q.Account == ""
	if !anyAcct {
		id, ok := l.ids[q.Account]
		if !ok {
			return &Result{}, nil
		}
		acct = id
	}
	tagKeys := make([]uint32, len(q.GroupBy))
	perLine := false
	for i, d := range q.GroupBy {
		if d.Kind == DimTag {
			id, ok := l.ids[d.Key]
			if !ok {
				id = ^uint32(0)
			}
			tagKeys[i] = id
		}
		perLine = perLine || d.perLine()
	}
	var filt compiled
	if q.Filter != nil {
		filt = q.Filter.compile(l)
		perLine = perLine || q.Filter.perLine()
	}
	if q.Cluster != "" || q.TagKey != "" {
		inner := filt
		cl, clOK := l.ids[q.Cluster]
		tk, tkOK := l.ids[q.TagKey]
		tv, tvOK := l.ids[q.TagVal]
		filt = func(e *entry, ln *lineE) bool {
			if q.Cluster != "" && (!clOK || e.cluster != cl) {
				return false
			}
			if q.TagKey != "" {
				if !tkOK || !tvOK {
					return false
				}
				found := false
				for i := 0; i < len(e.tags); i += 2 {
					if e.tags[i] == tk && e.tags[i+1] == tv {
						found = true
					}
				}
				if !found {
					return false
				}
			}
			return inner == nil || inner(e, ln)
		}
	}
	groups := map[groupKey]*Agg{}
	var total Agg
	var k groupKey
	for i := range l.entries {
		e := &l.entries[i]
		if !e.live || e.hour < from || e.hour >= to || (!anyAcct && e.account != acct) {
			continue
		}
		if !perLine {
			if filt != nil && !filt(e, nil) {
				continue
			}
			for j, d := range q.GroupBy {
				k[j] = l.dimValue(d, tagKeys[j], e, nil)
			}
			a := groups[k]
			if a == nil {
				a = &Agg{}
				groups[k] = a
			}
			for n := 0; n < int(e.n); n++ {
				a.add(&e.lines[n])
				total.add(&e.lines[n])
			}
			continue
		}
		for n := 0; n < int(e.n); n++ {
			ln := &e.lines[n]
			if filt != nil && !filt(e, ln) {
				continue
			}
			for j, d := range q.GroupBy {
				k[j] = l.dimValue(d, tagKeys[j], e, ln)
			}
			a := groups[k]
			if a == nil {
				a = &Agg{}
				groups[k] = a
			}
			a.add(ln)
			total.add(ln)
		}
	}
	res := &Result{Total: total}
	for gk, a := range groups {
		g := Group{Agg: *a, raw: gk}
		for j, d := range q.GroupBy {
			g.Keys = append(g.Keys, l.dimString(d, gk[j]))
		}
		res.Groups = append(res.Groups, g)
	}
	sort.Slice(res.Groups, func(i, j int) bool {
		a, b := res.Groups[i], res.Groups[j]
		for n, d := range q.GroupBy {
			if a.raw[n] == b.raw[n] {
				continue
			}
			if isTimeDim(d) {
				return a.raw[n] < b.raw[n]
			}
			return a.Keys[n] < b.Keys[n]
		}
		return false
	})
	return res, nil
}

func isTimeDim(d Dim) bool { return d.Kind == DimDay || d.Kind == DimHour || d.Kind == DimMonth }

func (l *Ledger) dimValue(d Dim, tagKey uint32, e *entry, ln *lineE) int64 {
	switch d.Kind {
	case DimCluster:
		return int64(e.cluster)
	case DimService:
		return int64(e.service)
	case DimFamily:
		return int64(e.family)
	case DimTask:
		return int64(e.task)
	case DimTag:
		for i := 0; i < len(e.tags); i += 2 {
			if e.tags[i] == tagKey {
				return int64(e.tags[i+1])
			}
		}
		return -1
	case DimHour:
		return e.hour
	case DimDay:
		return e.hour - e.hour%86400
	case DimMonth:
		t := time.Unix(e.hour, 0).UTC()
		return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC).Unix()
	case DimUsageType:
		if ln != nil {
			return int64(ln.ut)
		}
	case DimAccount:
		return int64(e.account)
	case DimRegion:
		return int64(e.region)
	case DimCapacity:
		return int64(e.capacity)
	}
	return 0
}

func (l *Ledger) dimString(d Dim, v int64) string {
	switch d.Kind {
	case DimHour:
		return time.Unix(v, 0).UTC().Format("2006-01-02T15:04:05Z")
	case DimDay:
		return time.Unix(v, 0).UTC().Format("2006-01-02")
	case DimMonth:
		return time.Unix(v, 0).UTC().Format("2006-01")
	case DimAWSSvc:
		return AWSServiceName
	case DimTag:
		if v < 0 {
			return ""
		}
	}
	if v >= 0 && v < int64(len(l.strs)) {
		return l.strs[v]
	}
	return ""
}
