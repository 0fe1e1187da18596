package billing

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/model"
	"github.com/gantry-dev/gantry/internal/state"
)

// Meter turns stored tasks into usage records. Each pass reads every task
// whose usage is not final yet and rewrites its usage records from the
// task's timestamps, so a pass is idempotent: a restart (or a pass run
// twice) neither loses nor double-counts a second. A task's usage becomes
// final once it is STOPPED; from then on the meter skips it.
type Meter struct {
	Store  state.Store
	Prices *Prices
	Ledger *Ledger // kept in step with what the meter writes
	Log    *slog.Logger
	// Now is the clock (tests inject one); default time.Now.
	Now func() time.Time
	// Interval between passes (default 5s).
	Interval time.Duration
	// AfterPass runs after each pass (budget checks).
	AfterPass func(ctx context.Context, now time.Time)

	mu       sync.Mutex // one pass at a time
	lastPass time.Time
	badTasks map[string]bool
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

func (m *Meter) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func (m *Meter) log() *slog.Logger {
	if m.Log != nil {
		return m.Log
	}
	return slog.Default()
}

// Start runs passes in the background until Stop.
func (m *Meter) Start(ctx context.Context) {
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m.cancel = cancel
	every := m.Interval
	if every <= 0 {
		every = 5 * time.Second
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-bg.Done():
				return
			case <-t.C:
			}
			if err := m.Pass(bg); err != nil && bg.Err() == nil {
				m.log().Warn("billing meter pass", "err", err)
			}
		}
	}()
}

// Stop ends the background passes.
func (m *Meter) Stop() {
	if m.cancel != nil {
		m.cancel()
	}
	m.wg.Wait()
}

// Fresh runs a pass unless one finished within maxAge, so a report shows
// running tasks' cost accrued up to now.
func (m *Meter) Fresh(ctx context.Context, maxAge time.Duration) error {
	m.mu.Lock()
	recent := !m.lastPass.IsZero() && m.now().Sub(m.lastPass) < maxAge
	m.mu.Unlock()
	if recent {
		return nil
	}
	return m.Pass(ctx)
}

type pending struct {
	key   string
	task  *model.TaskRecord
	tags  []ecstypes.Tag
	state *MeterState
}

// Pass meters every task whose usage is not final.
func (m *Meter) Pass(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	var work []pending
	var orphans []string
	states := map[string]*MeterState{}
	err := m.Store.View(ctx, func(tx state.Tx) error {
		work, orphans = nil, nil
		clear(states)
		if err := tx.Scan(KindMeter, "", "", 0, func(key string, data []byte) error {
			var st MeterState
			if err := json.Unmarshal(data, &st); err != nil {
				return err
			}
			states[key] = &st
			return nil
		}); err != nil {
			return err
		}
		seen := map[string]bool{}
		if err := tx.Scan(model.KindTask, "", "", 0, func(key string, data []byte) error {
			seen[key] = true
			st := states[key]
			if st != nil && st.Final {
				return nil
			}
			var rec model.TaskRecord
			if err := json.Unmarshal(data, &rec); err != nil {
				return err
			}
			work = append(work, pending{key: key, task: &rec, state: st})
			return nil
		}); err != nil {
			return err
		}
		for i := range work {
			if _, err := tx.Get(model.KindTags, ecstypes.Deref(work[i].task.Task.TaskArn), &work[i].tags); err != nil {
				return err
			}
		}
		for key := range states {
			if !seen[key] {
				orphans = append(orphans, key)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	prices := m.Prices.Current()
	var puts []*UsageRecord
	var dels []string
	err = m.Store.Update(ctx, func(tx state.Tx) error {
		puts, dels = nil, nil
		for _, w := range work {
			p, d, err := m.meterTask(tx, w, now, prices)
			if err != nil {
				return err
			}
			puts, dels = append(puts, p...), append(dels, d...)
		}
		for _, key := range orphans {
			p, err := finishOrphan(tx, key, states[key])
			if err != nil {
				return err
			}
			puts = append(puts, p...)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if m.Ledger != nil {
		m.Ledger.Apply(puts, dels)
	}
	m.lastPass = now
	if m.AfterPass != nil {
		m.AfterPass(ctx, now)
	}
	return nil
}

// meterTask rewrites one task's usage records; it returns what it stored
// and the keys it deleted.
func (m *Meter) meterTask(tx state.Tx, w pending, now time.Time, prices *PriceList) ([]*UsageRecord, []string, error) {
	arn := ecstypes.Deref(w.task.Task.TaskArn)
	old := w.state
	if old == nil {
		old = &MeterState{TaskARN: arn}
	}
	u, err := FromTask(w.task, w.tags)
	if err != nil {
		// A record the meter cannot read is reported once and left alone.
		if m.badTasks == nil {
			m.badTasks = map[string]bool{}
		}
		if !m.badTasks[w.key] {
			m.log().Warn("billing: cannot meter task", "task", arn, "err", err)
			m.badTasks[w.key] = true
		}
		return nil, nil, nil
	}
	recs := Slices(u, now, func(int64) *PriceList { return prices })
	next := &MeterState{TaskARN: arn, Final: u.Stopped}
	if len(recs) == 0 && u.Stopped {
		next.Reason = "not billed: stopped before its image pull or start began"
	}
	var puts []*UsageRecord
	for _, r := range recs {
		next.Hours = append(next.Hours, r.Hour)
		var cur UsageRecord
		found, err := tx.Get(KindUsage, r.Key(), &cur)
		if err != nil {
			return nil, nil, err
		}
		switch {
		case !found:
			r.BilledAt = now.UnixMilli()
		case cur.Start == r.Start && cur.End == r.End:
			// The hour's usage is unchanged: keep the record as billed
			// (its prices and tags), only marking it final.
			if cur.Final == r.Final {
				continue
			}
			cur.Final = r.Final
			r = &cur
		default:
			// Still accruing: the price stays what it was when the hour
			// was first metered.
			r.BilledAt = cur.BilledAt
			reprice(r, &cur)
		}
		if err := tx.Put(KindUsage, r.Key(), r); err != nil {
			return nil, nil, err
		}
		puts = append(puts, r)
	}
	var dels []string
	for _, h := range old.Hours {
		if !slices.Contains(next.Hours, h) {
			key := UsageKey(u.Account, u.Region, h, u.Cluster, taskID(arn))
			if _, err := tx.Delete(KindUsage, key); err != nil {
				return nil, nil, err
			}
			dels = append(dels, key)
		}
	}
	if w.state == nil || !equalState(old, next) {
		if err := tx.Put(KindMeter, w.key, next); err != nil {
			return nil, nil, err
		}
	}
	return puts, dels, nil
}

func equalState(a, b *MeterState) bool {
	return a.TaskARN == b.TaskARN && a.Final == b.Final && a.Reason == b.Reason && slices.Equal(a.Hours, b.Hours)
}

// reprice gives r's lines the prices cur was billed at.
func reprice(r, cur *UsageRecord) {
	was := map[string]string{}
	for _, l := range cur.Lines {
		was[l.UsageType] = l.Price
	}
	for i, l := range r.Lines {
		p, ok := was[l.UsageType]
		if !ok {
			continue
		}
		r.Lines[i] = line(l.UsageType, l.Kind, l.Qty, mustDecimal(p))
	}
}

// finishOrphan handles a meter state whose task is gone (pruned): usage not
// yet final is closed as it stands; a final state is no longer needed.
func finishOrphan(tx state.Tx, key string, st *MeterState) ([]*UsageRecord, error) {
	if st.Final {
		_, err := tx.Delete(KindMeter, key)
		return nil, err
	}
	region, account, cluster, ok := parseTaskARN(st.TaskARN)
	var puts []*UsageRecord
	if ok {
		for _, h := range st.Hours {
			var r UsageRecord
			k := UsageKey(account, region, h, cluster, taskID(st.TaskARN))
			found, err := tx.Get(KindUsage, k, &r)
			if err != nil {
				return nil, err
			}
			if found && !r.Final {
				r.Final = true
				if err := tx.Put(KindUsage, k, &r); err != nil {
					return nil, err
				}
				puts = append(puts, &r)
			}
		}
	}
	next := *st
	next.Final = true
	next.Reason = "task record removed before it was seen STOPPED; usage closed as last metered"
	next.Hours = slices.Clone(st.Hours)
	return puts, tx.Put(KindMeter, key, &next)
}
