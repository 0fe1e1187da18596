package billing

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/model"
	"github.com/gantry-dev/gantry/internal/state"
)

var sc = model.Scope{Account: "123456789012", Region: "us-east-1"}

// t0 is an hour boundary, so one-hour tasks fill exactly one usage record.
var t0 = time.Date(2026, 3, 10, 14, 0, 0, 0, time.UTC)

type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

type fixture struct {
	t      *testing.T
	store  state.Store
	ledger *Ledger
	meter  *Meter
	clock  *clock
	dir    string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	st, err := state.OpenSQLite(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{t: t, store: st, dir: dir, clock: &clock{now: t0}}
	f.restart()
	return f
}

// restart drops the in-memory parts and builds them again from the store,
// as a server restart does.
func (f *fixture) restart() {
	f.t.Helper()
	f.ledger = NewLedger()
	if err := f.ledger.Load(context.Background(), f.store); err != nil {
		f.t.Fatal(err)
	}
	f.meter = &Meter{Store: f.store, Prices: &Prices{Path: filepath.Join(f.dir, "prices.json")}, Ledger: f.ledger, Now: f.clock.Now}
}

func (f *fixture) pass(at time.Time) {
	f.t.Helper()
	f.clock.now = at
	if err := f.meter.Pass(context.Background()); err != nil {
		f.t.Fatal(err)
	}
}

type taskOpts struct {
	id, cluster, family string
	cpu, mem            string
	eph                 int32
	capacity, arch      string
	pull, start, stop   *time.Time
	tags                map[string]string
	group               string
}

func at(d time.Duration) *time.Time { t := t0.Add(d); return &t }

func (f *fixture) putTask(o taskOpts) {
	f.t.Helper()
	if o.cluster == "" {
		o.cluster = "demo"
	}
	if o.family == "" {
		o.family = "web"
	}
	if o.arch == "" {
		o.arch = "x86_64"
	}
	if o.group == "" {
		o.group = "family:" + o.family
	}
	arn := sc.TaskARN(o.cluster, o.id)
	task := ecstypes.Task{
		TaskArn:           ecstypes.String(arn),
		ClusterArn:        ecstypes.String(sc.ClusterARN(o.cluster)),
		TaskDefinitionArn: ecstypes.String(sc.TaskDefinitionARN(o.family, 3)),
		Cpu:               ecstypes.String(o.cpu),
		Memory:            ecstypes.String(o.mem),
		LaunchType:        ecstypes.String("FARGATE"),
		Group:             ecstypes.String(o.group),
		LastStatus:        ecstypes.String("RUNNING"),
		CreatedAt:         ecstypes.At(t0.Add(-10 * time.Second)),
		Attributes:        []*ecstypes.Attribute{{Name: ecstypes.String("ecs.cpu-architecture"), Value: ecstypes.String(o.arch)}},
	}
	if o.eph > 0 {
		task.EphemeralStorage = &ecstypes.EphemeralStorage{SizeInGiB: ecstypes.Int32(o.eph)}
	}
	if o.capacity != "" {
		task.CapacityProviderName = ecstypes.String(o.capacity)
	}
	if o.pull != nil {
		task.PullStartedAt = ecstypes.At(*o.pull)
	}
	if o.start != nil {
		task.StartedAt = ecstypes.At(*o.start)
	}
	if o.stop != nil {
		task.LastStatus = ecstypes.String("STOPPED")
		task.StoppedAt = ecstypes.At(*o.stop)
		task.ExecutionStoppedAt = ecstypes.At(*o.stop)
	}
	err := f.store.Update(context.Background(), func(tx state.Tx) error {
		if len(o.tags) > 0 {
			var tags []ecstypes.Tag
			for k, v := range o.tags {
				tags = append(tags, ecstypes.Tag{Key: ecstypes.String(k), Value: ecstypes.String(v)})
			}
			if err := tx.Put(model.KindTags, arn, tags); err != nil {
				return err
			}
		}
		return tx.Put(model.KindTask, sc.TaskKey(o.cluster, o.id), &model.TaskRecord{Task: task})
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) deleteTask(cluster, id string) {
	f.t.Helper()
	err := f.store.Update(context.Background(), func(tx state.Tx) error {
		_, err := tx.Delete(model.KindTask, sc.TaskKey(cluster, id))
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

// records reads the usage records from the store (not the ledger).
func (f *fixture) records() []UsageRecord {
	f.t.Helper()
	var out []UsageRecord
	err := f.store.View(context.Background(), func(tx state.Tx) error {
		var err error
		out, err = state.List[UsageRecord](tx, KindUsage, "")
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

func (f *fixture) run(q Query) *Result {
	f.t.Helper()
	res, err := f.ledger.Run(q)
	if err != nil {
		f.t.Fatal(err)
	}
	return res
}

// lineCosts maps usage type to the summed cost of the stored records.
func lineCosts(recs []UsageRecord) map[string]string {
	sums := map[string]decimal.Decimal{}
	for _, r := range recs {
		for _, l := range r.Lines {
			sums[l.UsageType] = sums[l.UsageType].Add(mustDecimal(l.Cost))
		}
	}
	out := map[string]string{}
	for k, v := range sums {
		out[k] = v.String()
	}
	return out
}

func wantCosts(t *testing.T, got map[string]string, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("usage types %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: cost %s, want %s", k, got[k], v)
		}
	}
}

func TestBillRoundsUpToTheSecond(t *testing.T) {
	f := newFixture(t)
	f.putTask(taskOpts{id: "a1", cpu: "256", mem: "512", pull: at(0), start: at(2 * time.Second), stop: at(61200 * time.Millisecond)})
	f.pass(t0.Add(5 * time.Minute))
	recs := f.records()
	if len(recs) != 1 {
		t.Fatalf("records: %+v", recs)
	}
	r := recs[0]
	if r.End-r.Start != 62_000 || !r.Final {
		t.Errorf("billed %d ms (final %v), want 62000 ms final", r.End-r.Start, r.Final)
	}
	// 0.25 vCPU x 62 s x $0.04048/h and 0.5 GB x 62 s x $0.004445/h.
	wantCosts(t, lineCosts(recs), map[string]string{
		"USE1-Fargate-vCPU-Hours:perCPU": "0.0001742889",
		"USE1-Fargate-GB-Hours":          "0.0000382764",
	})
	res := f.run(Query{})
	if got := res.Total.CostDecimal().String(); got != "0.0002125653" {
		t.Errorf("total %s, want 0.0002125653", got)
	}
	if got := res.Total.Hours(0).String(); got != "0.0043055556" { // 0.25 x 62 / 3600
		t.Errorf("vCPU-hours %s", got)
	}
	if got := res.Total.Hours(1).String(); got != "0.0086111111" { // 0.5 x 62 / 3600
		t.Errorf("GB-hours %s", got)
	}
}

func TestBillOneMinuteMinimum(t *testing.T) {
	f := newFixture(t)
	f.putTask(taskOpts{id: "a2", cpu: "256", mem: "512", pull: at(0), start: at(time.Second), stop: at(10 * time.Second)})
	f.pass(t0.Add(time.Minute))
	recs := f.records()
	if len(recs) != 1 || recs[0].End-recs[0].Start != 60_000 {
		t.Fatalf("want one 60 s record: %+v", recs)
	}
	wantCosts(t, lineCosts(recs), map[string]string{
		"USE1-Fargate-vCPU-Hours:perCPU": "0.0001686667", // 0.25 x 60 x 0.04048 / 3600
		"USE1-Fargate-GB-Hours":          "0.0000370417", // 0.5 x 60 x 0.004445 / 3600
	})
}

func TestBillLargeTaskWithEphemeralStorage(t *testing.T) {
	f := newFixture(t)
	f.putTask(taskOpts{id: "big", cpu: "4096", mem: "30720", eph: 100, pull: at(0), start: at(20 * time.Second), stop: at(time.Hour)})
	f.pass(t0.Add(2 * time.Hour))
	recs := f.records()
	wantCosts(t, lineCosts(recs), map[string]string{
		"USE1-Fargate-vCPU-Hours:perCPU":         "0.16192", // 4 x 0.04048
		"USE1-Fargate-GB-Hours":                  "0.13335", // 30 x 0.004445
		"USE1-Fargate-EphemeralStorage-GB-Hours": "0.00888", // (100 - 20) x 0.000111
	})
	if got := f.run(Query{}).Total.CostDecimal().String(); got != "0.30415" {
		t.Errorf("total %s, want 0.30415", got)
	}
}

func TestBillSpotAndARM(t *testing.T) {
	f := newFixture(t)
	f.putTask(taskOpts{id: "spot", cpu: "1024", mem: "2048", capacity: "FARGATE_SPOT", pull: at(0), stop: at(time.Hour)})
	f.putTask(taskOpts{id: "arm", cpu: "1024", mem: "2048", arch: "arm64", pull: at(0), stop: at(time.Hour)})
	f.putTask(taskOpts{id: "armspot", cpu: "1024", mem: "2048", arch: "arm64", capacity: "FARGATE_SPOT", pull: at(0), stop: at(time.Hour)})
	f.pass(t0.Add(2 * time.Hour))
	res := f.run(Query{GroupBy: []Dim{{Kind: DimUsageType}}})
	got := map[string]string{}
	for _, g := range res.Groups {
		got[g.Keys[0]] = g.CostDecimal().String()
	}
	wantCosts(t, got, map[string]string{
		"USE1-SpotUsage-Fargate-vCPU-Hours:perCPU":     "0.012144",
		"USE1-SpotUsage-Fargate-GB-Hours":              "0.002667", // 2 x 0.0013335
		"USE1-Fargate-ARM-vCPU-Hours:perCPU":           "0.03238",
		"USE1-Fargate-ARM-GB-Hours":                    "0.00712",
		"USE1-SpotUsage-Fargate-ARM-vCPU-Hours:perCPU": "0.009714",
		"USE1-SpotUsage-Fargate-ARM-GB-Hours":          "0.002136",
	})
}

func TestBillStoppedWhilePulling(t *testing.T) {
	f := newFixture(t)
	// The pull began, never finished, and the task was stopped 5.3 s later:
	// billed from the pull's start, one-minute minimum.
	f.putTask(taskOpts{id: "pull", cpu: "512", mem: "1024", pull: at(0), stop: at(5300 * time.Millisecond)})
	// Refused before any pull or start: nothing to bill.
	f.putTask(taskOpts{id: "never", cpu: "512", mem: "1024", stop: at(time.Second)})
	f.pass(t0.Add(time.Minute))
	recs := f.records()
	if len(recs) != 1 || !strings.HasSuffix(recs[0].TaskARN, "/pull") || recs[0].End-recs[0].Start != 60_000 {
		t.Fatalf("records: %+v", recs)
	}
	wantCosts(t, lineCosts(recs), map[string]string{
		"USE1-Fargate-vCPU-Hours:perCPU": "0.0003373333", // 0.5 x 60 x 0.04048 / 3600
		"USE1-Fargate-GB-Hours":          "0.0000740833", // 1 x 60 x 0.004445 / 3600
	})
	var st MeterState
	f.store.View(context.Background(), func(tx state.Tx) error {
		_, err := tx.Get(KindMeter, sc.TaskKey("demo", "never"), &st)
		return err
	})
	if !st.Final || st.Reason == "" || len(st.Hours) != 0 {
		t.Errorf("never-started task's meter state: %+v", st)
	}
}

func TestBillStartedAtWhenNothingPulled(t *testing.T) {
	f := newFixture(t)
	f.putTask(taskOpts{id: "s", cpu: "256", mem: "512", start: at(0), stop: at(90 * time.Second)})
	f.pass(t0.Add(time.Hour))
	if recs := f.records(); len(recs) != 1 || recs[0].End-recs[0].Start != 90_000 {
		t.Fatalf("records: %+v", recs)
	}
}

// A running task shows its cost so far; a restart in the middle neither
// loses nor double-counts a second; crossing an hour splits the record.
func TestBillRestartMidTask(t *testing.T) {
	f := newFixture(t)
	start := t0.Add(30 * time.Minute)
	f.putTask(taskOpts{id: "r", cpu: "1024", mem: "2048", pull: &start, start: at(31 * time.Minute)})

	f.pass(start.Add(20*time.Minute + 400*time.Millisecond))
	accrued := f.run(Query{}).Total
	if accrued.Qty[0] != 1024*(20*60+1)*1000 { // 20 min 0.4 s so far, rounded up
		t.Fatalf("accrued vCPU qty %d", accrued.Qty[0])
	}
	// 1201 s of 1 vCPU (0.0135045778) and 2 GB (0.0029658028).
	if got := accrued.CostDecimal().String(); got != "0.0164703806" {
		t.Errorf("accrued cost %s", got)
	}
	f.pass(start.Add(25 * time.Minute)) // into the next hour
	before := f.records()

	// The server goes away and comes back; the task ran on meanwhile.
	f.restart()
	if f.ledger.Len() != len(before) {
		t.Fatalf("ledger after restart holds %d records, store %d", f.ledger.Len(), len(before))
	}
	f.pass(start.Add(80 * time.Minute))
	f.pass(start.Add(80 * time.Minute)) // twice: idempotent
	stop := start.Add(95 * time.Minute)
	f.putTask(taskOpts{id: "r", cpu: "1024", mem: "2048", pull: &start, start: at(31 * time.Minute), stop: &stop})
	f.restart()
	f.pass(stop.Add(3 * time.Hour))

	recs := f.records()
	if len(recs) != 3 { // 14:30-15:00, 15:00-16:00, 16:00-16:05
		t.Fatalf("records: %d", len(recs))
	}
	var ms int64
	for _, r := range recs {
		ms += r.End - r.Start
		if !r.Final {
			t.Errorf("record %s not final", r.Key())
		}
	}
	if ms != 95*60*1000 {
		t.Errorf("billed %d ms, want %d", ms, 95*60*1000)
	}
	res := f.run(Query{GroupBy: []Dim{{Kind: DimHour}}})
	if len(res.Groups) != 3 || res.Groups[0].Keys[0] != "2026-03-10T14:00:00Z" || res.Groups[2].Keys[0] != "2026-03-10T16:00:00Z" {
		t.Errorf("hours: %+v", res.Groups)
	}
	// 95 min of 1 vCPU and 2 GB, each hour's line rounded to 1e-10:
	// 30 min 0.02024 + 0.004445, 60 min 0.04048 + 0.00889,
	// 5 min 0.0033733333 + 0.0007408333.
	if got := res.Total.CostDecimal().String(); got != "0.0781691666" {
		t.Errorf("total %s, want 0.0781691666", got)
	}
}

// Prices change without a restart; each record keeps the price it was
// billed at.
func TestBillPriceChange(t *testing.T) {
	f := newFixture(t)
	start := t0.Add(50 * time.Minute)
	f.putTask(taskOpts{id: "p", cpu: "1024", mem: "2048", pull: &start})
	f.pass(start.Add(5 * time.Minute))

	prices := map[string]string{}
	for k, v := range DefaultPrices {
		prices[k] = v
	}
	prices[UTvCPU] = "0.05"
	writePrices(t, f.meter.Prices.Path, prices)
	f.pass(start.Add(9 * time.Minute)) // hour 14 still accruing: keeps its first price
	f.pass(start.Add(30 * time.Minute))
	stop := start.Add(40 * time.Minute)
	f.putTask(taskOpts{id: "p", cpu: "1024", mem: "2048", pull: &start, stop: &stop})
	f.pass(stop.Add(time.Minute))

	recs := f.records()
	if len(recs) != 2 {
		t.Fatalf("records: %+v", recs)
	}
	for _, r := range recs {
		want := "0.04048"
		if r.Hour != t0.Unix() {
			want = "0.05"
		}
		if r.Lines[0].Price != want {
			t.Errorf("hour %d billed at %s, want %s", r.Hour, r.Lines[0].Price, want)
		}
	}
	// 10 min at the old price (0.0067466667 + 0.0014816667), 30 at the
	// new one (0.025 + 0.004445).
	want := mustDecimal("0.0376733334")
	if got := f.run(Query{}).Total.CostDecimal(); !got.Equal(want) {
		t.Errorf("total %s, want %s", got, want)
	}

	// A broken price list is ignored: the last good one stays in force.
	os.WriteFile(f.meter.Prices.Path, []byte(`{"prices":{"nope":"1"}}`), 0o644)
	if p := f.meter.Prices.Current().Prices[UTvCPU]; p.String() != "0.05" {
		t.Errorf("after a bad price file: %s", p)
	}
}

func writePrices(t *testing.T, path string, prices map[string]string) {
	t.Helper()
	b := []byte(`{"currency":"USD","prices":{`)
	first := true
	for k, v := range prices {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = fmt.Appendf(b, "%q:%q", k, v)
	}
	b = append(b, "}}"...)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	// Make sure the change is visible even on coarse file-time clocks.
	future := time.Now().Add(time.Duration(rand.IntN(1000)+1) * time.Second)
	os.Chtimes(path, future, future)
}

// A task pruned before the meter saw it STOPPED keeps what was metered,
// closed; nothing is metered twice afterwards.
func TestBillPrunedTask(t *testing.T) {
	f := newFixture(t)
	f.putTask(taskOpts{id: "gone", cpu: "256", mem: "512", pull: at(0)})
	f.pass(t0.Add(10 * time.Minute))
	f.deleteTask("demo", "gone")
	f.pass(t0.Add(20 * time.Minute))
	f.pass(t0.Add(30 * time.Minute))
	recs := f.records()
	if len(recs) != 1 || !recs[0].Final || recs[0].End-recs[0].Start != 10*60*1000 {
		t.Fatalf("records: %+v", recs)
	}
	var n int
	f.store.View(context.Background(), func(tx state.Tx) error {
		return tx.Scan(KindMeter, "", "", 0, func(string, []byte) error { n++; return nil })
	})
	if n != 0 {
		t.Errorf("%d meter states left for a task that is gone", n)
	}
}

// Totals add up exactly whatever the grouping.
func TestReportTotalsAddUp(t *testing.T) {
	f := newFixture(t)
	r := rand.New(rand.NewPCG(1, 2))
	sizes := [][2]string{{"256", "512"}, {"512", "2048"}, {"1024", "3072"}, {"4096", "16384"}}
	for i := range 200 {
		s := sizes[r.IntN(len(sizes))]
		pull := t0.Add(time.Duration(r.IntN(48*3600*1000)) * time.Millisecond)
		stop := pull.Add(time.Duration(r.IntN(5*3600*1000)) * time.Millisecond)
		cap := ""
		if r.IntN(3) == 0 {
			cap = "FARGATE_SPOT"
		}
		f.putTask(taskOpts{id: fmt.Sprintf("t%03d", i), cluster: []string{"a", "b", "c"}[r.IntN(3)], family: []string{"web", "job"}[r.IntN(2)],
			cpu: s[0], mem: s[1], eph: int32(20 + r.IntN(3)*40), capacity: cap, pull: &pull, stop: &stop,
			tags: map[string]string{"team": []string{"red", "blue"}[r.IntN(2)]}, group: []string{"service:api", "family:x"}[r.IntN(2)]})
	}
	f.pass(t0.Add(80 * time.Hour))
	total := f.run(Query{}).Total
	storeSum := decimal.Zero
	for _, rec := range f.records() {
		storeSum = storeSum.Add(rec.Cost())
	}
	if !total.CostDecimal().Equal(storeSum) {
		t.Fatalf("ledger total %s, stored records %s", total.CostDecimal(), storeSum)
	}
	for _, dims := range [][]Dim{{{Kind: DimCluster}}, {{Kind: DimService}}, {{Kind: DimFamily}}, {{Kind: DimTask}}, {{Kind: DimTag, Key: "team"}},
		{{Kind: DimDay}}, {{Kind: DimHour}}, {{Kind: DimUsageType}}, {{Kind: DimCluster}, {Kind: DimDay}}, {{Kind: DimTag, Key: "missing"}}} {
		res := f.run(Query{GroupBy: dims})
		var sum Agg
		for _, g := range res.Groups {
			sum.plus(&g.Agg)
		}
		if sum != total || res.Total != total {
			t.Errorf("group by %v: groups add to %+v, total %+v, want %+v", dims, sum, res.Total, total)
		}
	}
	// A time window is the sum of its hours.
	day1 := f.run(Query{From: t0, To: t0.Add(24 * time.Hour)}).Total
	day2 := f.run(Query{From: t0.Add(24 * time.Hour), To: t0.Add(80 * time.Hour)}).Total
	day1.plus(&day2)
	if day1 != total {
		t.Errorf("windows add to %+v, want %+v", day1, total)
	}
}

func TestFilter(t *testing.T) {
	f := newFixture(t)
	f.putTask(taskOpts{id: "x", cpu: "256", mem: "512", pull: at(0), stop: at(time.Hour), tags: map[string]string{"env": "prod"}})
	f.putTask(taskOpts{id: "y", cpu: "256", mem: "512", capacity: "FARGATE_SPOT", pull: at(0), stop: at(time.Hour)})
	f.pass(t0.Add(2 * time.Hour))
	s := func(v string) *string { return &v }
	cases := []struct {
		f    Filter
		want string
	}{
		{Filter{Tags: &ValueFilter{Key: s("env"), Values: []string{"prod"}}}, "0.0123425"},          // 0.25 x 0.04048 + 0.5 x 0.004445
		{Filter{Tags: &ValueFilter{Key: s("env"), MatchOptions: []string{"ABSENT"}}}, "0.00370275"}, // spot: 0.25 x 0.012144 + 0.5 x 0.0013335
		{Filter{Dimensions: &ValueFilter{Key: s("USAGE_TYPE"), Values: []string{"USE1-Fargate-GB-Hours"}}}, "0.0022225"},
		{Filter{Dimensions: &ValueFilter{Key: s("USAGE_TYPE"), Values: []string{"spotusage"}, MatchOptions: []string{"CONTAINS", "CASE_INSENSITIVE"}}}, "0.00370275"},
		{Filter{Not: &Filter{Dimensions: &ValueFilter{Key: s("SERVICE"), Values: []string{AWSServiceName}}}}, "0"},
		{Filter{And: []*Filter{
			{Dimensions: &ValueFilter{Key: s("LINKED_ACCOUNT"), Values: []string{sc.Account}}},
			{Dimensions: &ValueFilter{Key: s("USAGE_TYPE"), Values: []string{"-GB-Hours"}, MatchOptions: []string{"ENDS_WITH"}}},
		}}, "0.00288925"}, // 0.0022225 + 0.00066675
	}
	for i, c := range cases {
		if err := c.f.Validate("Filter"); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if got := f.run(Query{Filter: &c.f}).Total.CostDecimal().String(); got != c.want {
			t.Errorf("case %d: %s, want %s", i, got, c.want)
		}
	}
	bad := []Filter{
		{},
		{Dimensions: &ValueFilter{Key: s("INSTANCE_TYPE"), Values: []string{"x"}}},
		{And: []*Filter{{Tags: &ValueFilter{Key: s("a")}}}},
		{Tags: &ValueFilter{Key: s("a"), MatchOptions: []string{"SOMETIMES"}}},
	}
	for i, b := range bad {
		if err := b.Validate("Filter"); err == nil || !strings.Contains(err.Error(), "Filter") {
			t.Errorf("bad filter %d: %v", i, err)
		}
	}
}

func TestParsePriceFile(t *testing.T) {
	if _, err := ParsePriceFile(DefaultPriceFile()); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{`{`, `{"prices":{}}`, `{"prices":{"Fargate-GB-Hours":"-1"}}`, `{"prices":{"Fargate-GB-Hours":"abc"}}`, `{"extra":1}`} {
		if _, err := ParsePriceFile([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}
