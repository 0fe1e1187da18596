package billing

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/model"
)

// Document kinds the meter owns.
const (
	// KindUsage: UsageKey -> UsageRecord, one per task and clock hour.
	KindUsage = "billing.usage"
	// KindMeter: the task's KindTask key -> MeterState.
	KindMeter = "billing.meter"
	// KindBudget: account/region/name -> Budget.
	KindBudget = "billing.budget"
)

// Quantity kinds and what one unit of a line's Qty is.
const (
	KindVCPU    = "vcpu" // CPU units (1/1024 vCPU) x milliseconds
	KindMemory  = "mem"  // MiB x milliseconds
	KindStorage = "eph"  // GiB above the free 20 x milliseconds
)

// Divisors turn a line's Qty into unit-hours (vCPU-hours, GB-hours).
var divisors = map[string]int64{
	KindVCPU:    1024 * 3_600_000,
	KindMemory:  1024 * 3_600_000,
	KindStorage: 3_600_000,
}

// CostScale: costs are stored rounded to 10 decimal places (1e-10 USD).
const CostScale = 10

const (
	minBilled   = 60_000 // ms: one-minute minimum
	freeStorage = 20     // GiB of ephemeral storage included
)

// Line is one usage type of a usage record.
type Line struct {
	UsageType string `json:"ut"`    // with its region prefix: USE1-Fargate-GB-Hours
	Kind      string `json:"k"`     // vcpu, mem, eph
	Qty       int64  `json:"q"`     // in the kind's unit-milliseconds
	Price     string `json:"price"` // USD per unit-hour, as billed
	Cost      string `json:"cost"`  // USD, rounded to CostScale places
}

// UsageRecord is a task's metered usage within one clock hour (UTC).
type UsageRecord struct {
	Account   string `json:"account"`
	Region    string `json:"region"`
	Hour      int64  `json:"hour"` // unix seconds of the hour's start
	TaskARN   string `json:"taskArn"`
	Cluster   string `json:"cluster"`
	Service   string `json:"service,omitempty"`
	Family    string `json:"family"`
	Revision  int32  `json:"revision"`
	StartedBy string `json:"startedBy,omitempty"`
	Group     string `json:"group,omitempty"`
	// Capacity is FARGATE or FARGATE_SPOT; Arch is x86_64 or arm64.
	Capacity     string            `json:"capacity"`
	Arch         string            `json:"arch"`
	CPU          int64             `json:"cpu"`
	MemoryMiB    int64             `json:"memoryMiB"`
	EphemeralGiB int64             `json:"ephemeralGiB"`
	Start        int64             `json:"start"` // billed interval in this hour, unix ms
	End          int64             `json:"end"`
	Final        bool              `json:"final,omitempty"`
	Tags         map[string]string `json:"tags,omitempty"`
	Lines        []Line            `json:"lines"`
	BilledAt     int64             `json:"billedAt"` // when first metered (prices fixed then), unix ms
}

// UsageKey orders records by hour within an account and region.
func UsageKey(account, region string, hour int64, cluster, taskID string) string {
	return fmt.Sprintf("%s/%s/%010d/%s/%s", account, region, hour, cluster, taskID)
}

// Key is the record's key in the store.
func (u *UsageRecord) Key() string {
	return UsageKey(u.Account, u.Region, u.Hour, u.Cluster, taskID(u.TaskARN))
}

// Cost is the record's total cost.
func (u *UsageRecord) Cost() decimal.Decimal {
	sum := decimal.Zero
	for _, l := range u.Lines {
		c, _ := decimal.NewFromString(l.Cost)
		sum = sum.Add(c)
	}
	return sum
}

// MeterState is what the meter remembers of a task: which hours it wrote,
// and whether the task's usage is final.
type MeterState struct {
	TaskARN string  `json:"taskArn"`
	Hours   []int64 `json:"hours,omitempty"`
	Final   bool    `json:"final,omitempty"`
	// Reason says why a task that stopped has no usage.
	Reason string `json:"reason,omitempty"`
}

// TaskUsage is what the meter reads from a task record.
type TaskUsage struct {
	Account, Region, Cluster, TaskARN string
	Service, Family, StartedBy, Group string
	Revision                          int32
	Capacity, Arch                    string
	CPU, MemoryMiB, EphemeralGiB      int64
	// Start is pullStartedAt, or startedAt when nothing was pulled; zero
	// when the task never got that far.
	Start time.Time
	// End is when it stopped; zero while it runs.
	End     time.Time
	Stopped bool
	Tags    map[string]string
}

// FromTask extracts the billable facts of a stored task.
func FromTask(rec *model.TaskRecord, tags []ecstypes.Tag) (*TaskUsage, error) {
	t := &rec.Task
	arn := ecstypes.Deref(t.TaskArn)
	region, account, cluster, ok := parseTaskARN(arn)
	if !ok {
		return nil, fmt.Errorf("task ARN %q", arn)
	}
	u := &TaskUsage{Account: account, Region: region, Cluster: cluster, TaskARN: arn,
		StartedBy: ecstypes.Deref(t.StartedBy), Group: ecstypes.Deref(t.Group)}
	if svc, ok := strings.CutPrefix(u.Group, "service:"); ok {
		u.Service = svc
	}
	u.Family, u.Revision, _ = model.ParseTaskDefinitionRef(ecstypes.Deref(t.TaskDefinitionArn))
	u.Capacity = "FARGATE"
	if ecstypes.Deref(t.CapacityProviderName) == "FARGATE_SPOT" {
		u.Capacity = "FARGATE_SPOT"
	}
	u.Arch = "x86_64"
	for _, a := range t.Attributes {
		if a != nil && ecstypes.Deref(a.Name) == "ecs.cpu-architecture" && strings.EqualFold(ecstypes.Deref(a.Value), "arm64") {
			u.Arch = "arm64"
		}
	}
	var err error
	if u.CPU, err = parseCPU(ecstypes.Deref(t.Cpu)); err != nil {
		return nil, err
	}
	if u.MemoryMiB, err = parseMemory(ecstypes.Deref(t.Memory)); err != nil {
		return nil, err
	}
	u.EphemeralGiB = freeStorage
	if t.EphemeralStorage != nil && t.EphemeralStorage.SizeInGiB != nil {
		u.EphemeralGiB = int64(*t.EphemeralStorage.SizeInGiB)
	}
	switch {
	case t.PullStartedAt != nil:
		u.Start = t.PullStartedAt.Time
	case t.StartedAt != nil:
		u.Start = t.StartedAt.Time
	}
	if ecstypes.Deref(t.LastStatus) == "STOPPED" {
		u.Stopped = true
		switch {
		case t.StoppedAt != nil:
			u.End = t.StoppedAt.Time
		case t.ExecutionStoppedAt != nil:
			u.End = t.ExecutionStoppedAt.Time
		}
	}
	if len(tags) > 0 {
		u.Tags = map[string]string{}
		for _, tg := range tags {
			u.Tags[ecstypes.Deref(tg.Key)] = ecstypes.Deref(tg.Value)
		}
	}
	return u, nil
}

// parseTaskARN splits arn:aws:ecs:REGION:ACCOUNT:task/CLUSTER/ID.
func parseTaskARN(arn string) (region, account, cluster string, ok bool) {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" {
		return "", "", "", false
	}
	res := strings.Split(parts[5], "/")
	if len(res) != 3 || res[0] != "task" {
		return "", "", "", false
	}
	return parts[3], parts[4], res[1], true
}

func taskID(arn string) string { return arn[strings.LastIndex(arn, "/")+1:] }

// parseCPU reads a task's cpu: CPU units ("256") or "0.25 vCPU".
func parseCPU(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if v, ok := strings.CutSuffix(strings.ToLower(s), "vcpu"); ok {
		d, err := decimal.NewFromString(strings.TrimSpace(v))
		if err != nil || !d.IsPositive() {
			return 0, fmt.Errorf("task cpu %q", s)
		}
		return d.Mul(decimal.NewFromInt(1024)).IntPart(), nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("task cpu %q", s)
	}
	return n, nil
}

// parseMemory reads a task's memory: MiB ("512") or "0.5 GB".
func parseMemory(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if v, ok := strings.CutSuffix(strings.ToLower(s), "gb"); ok {
		d, err := decimal.NewFromString(strings.TrimSpace(v))
		if err != nil || !d.IsPositive() {
			return 0, fmt.Errorf("task memory %q", s)
		}
		return d.Mul(decimal.NewFromInt(1024)).IntPart(), nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("task memory %q", s)
	}
	return n, nil
}

// BilledInterval is the span Fargate bills for a task as of now: from its
// start, the elapsed time rounded up to the whole second, at least one
// minute. ok is false when nothing is billable (the task never began
// pulling or starting).
func BilledInterval(u *TaskUsage, now time.Time) (start, end int64, ok bool) {
	if u.Start.IsZero() {
		return 0, 0, false
	}
	start = u.Start.UnixMilli()
	stop := now.UnixMilli()
	if u.Stopped && !u.End.IsZero() {
		stop = u.End.UnixMilli()
	}
	ran := max(stop-start, 0)
	billed := (ran + 999) / 1000 * 1000
	billed = max(billed, minBilled)
	return start, start + billed, true
}

// Slices splits a task's billed usage into per-hour usage records, priced
// with prices(hour) (the price in force when that hour was first metered).
func Slices(u *TaskUsage, now time.Time, prices func(hour int64) *PriceList) []*UsageRecord {
	start, end, ok := BilledInterval(u, now)
	if !ok {
		return nil
	}
	var out []*UsageRecord
	for h := start / 3_600_000 * 3_600_000; h < end; h += 3_600_000 {
		s, e := max(start, h), min(end, h+3_600_000)
		if e <= s {
			continue
		}
		hour := h / 1000
		r := &UsageRecord{
			Account: u.Account, Region: u.Region, Hour: hour, TaskARN: u.TaskARN, Cluster: u.Cluster,
			Service: u.Service, Family: u.Family, Revision: u.Revision, StartedBy: u.StartedBy, Group: u.Group,
			Capacity: u.Capacity, Arch: u.Arch, CPU: u.CPU, MemoryMiB: u.MemoryMiB, EphemeralGiB: u.EphemeralGiB,
			Start: s, End: e, Final: u.Stopped, Tags: u.Tags,
		}
		r.Lines = lines(u, e-s, prices(hour))
		out = append(out, r)
	}
	return out
}

// UsageTypes names a task's usage types (without the region prefix).
func usageTypes(u *TaskUsage) (vcpu, mem, storage string) {
	vcpu, mem, storage = UTvCPU, UTGB, UTStorage
	if u.Arch == "arm64" {
		vcpu, mem, storage = UTARMvCPU, UTARMGB, UTARMStorage
	}
	if u.Capacity == "FARGATE_SPOT" {
		vcpu, mem, storage = spotPrefix+vcpu, spotPrefix+mem, spotPrefix+storage
	}
	return
}

func lines(u *TaskUsage, ms int64, pl *PriceList) []Line {
	vcpu, mem, storage := usageTypes(u)
	prefix := RegionCode(u.Region) + "-"
	out := []Line{
		line(prefix+vcpu, KindVCPU, u.CPU*ms, pl.Prices[vcpu]),
		line(prefix+mem, KindMemory, u.MemoryMiB*ms, pl.Prices[mem]),
	}
	if extra := u.EphemeralGiB - freeStorage; extra > 0 {
		out = append(out, line(prefix+storage, KindStorage, extra*ms, pl.Prices[storage]))
	}
	return out
}

func line(ut, kind string, qty int64, price decimal.Decimal) Line {
	return Line{UsageType: ut, Kind: kind, Qty: qty, Price: price.String(), Cost: LineCost(kind, qty, price).StringFixed(CostScale)}
}

// LineCost is qty (in the kind's unit-milliseconds) at price per unit-hour,
// rounded half up to CostScale places.
func LineCost(kind string, qty int64, price decimal.Decimal) decimal.Decimal {
	num := decimal.NewFromInt(qty).Mul(price)
	return num.DivRound(decimal.NewFromInt(divisors[kind]), CostScale)
}

// Hours converts a summed Qty of kind into unit-hours, exactly when the
// result has at most places decimals (else rounded half up).
func Hours(kind string, qty int64, places int32) decimal.Decimal {
	return decimal.NewFromInt(qty).DivRound(decimal.NewFromInt(divisors[kind]), places)
}

func mustDecimal(s string) decimal.Decimal {
	d, err := decimal.NewFromString(s)
	if err != nil {
		return decimal.Zero
	}
	return d
}
