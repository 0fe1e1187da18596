package autoscaling

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gantry-dev/gantry/internal/autoscaling/aastypes"
	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/model"
	"github.com/gantry-dev/gantry/internal/state"
)

// KindScheduled holds scheduled actions: targetKey/name -> scheduledRecord.
const KindScheduled = "aas.scheduled"

type scheduledRecord struct {
	Action aastypes.ScheduledAction `json:"action"`
	// Checked is up to when the schedule has been looked at; Done marks an
	// at() action that has run.
	Checked time.Time `json:"checked"`
	Done    bool      `json:"done,omitempty"`
}

// schedule is a parsed at(), rate() or cron() expression.
type schedule struct {
	at   time.Time     // at(): in the action's time zone
	rate time.Duration // rate()
	cron *cronSpec
}

var (
	atRE   = regexp.MustCompile(`^at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)$`)
	rateRE = regexp.MustCompile(`^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$`)
	cronRE = regexp.MustCompile(`^cron\((.*)\)$`)
)

func parseSchedule(expr string, loc *time.Location) (schedule, error) {
	bad := func(why string) error {
		return validation("Invalid schedule expression %s: %s. Use at(yyyy-mm-ddThh:mm:ss), rate(value unit) or cron(fields).", expr, why)
	}
	if m := atRE.FindStringSubmatch(expr); m != nil {
		t, err := time.ParseInLocation("2006-01-02T15:04:05", m[1], loc)
		if err != nil {
			return schedule{}, bad(err.Error())
		}
		return schedule{at: t}, nil
	}
	if m := rateRE.FindStringSubmatch(expr); m != nil {
		n, err := strconv.Atoi(m[1])
		if err != nil || n <= 0 || n > 1_000_000 {
			return schedule{}, bad("the rate must be a positive number")
		}
		if (n == 1) != !strings.HasSuffix(m[2], "s") {
			return schedule{}, bad("the unit must be singular for 1 and plural otherwise")
		}
		unit := map[string]time.Duration{"minute": time.Minute, "hour": time.Hour, "day": 24 * time.Hour}[strings.TrimSuffix(m[2], "s")]
		return schedule{rate: time.Duration(n) * unit}, nil
	}
	if m := cronRE.FindStringSubmatch(expr); m != nil {
		c, err := parseCron(m[1])
		if err != nil {
			return schedule{}, bad(err.Error())
		}
		return schedule{cron: c}, nil
	}
	return schedule{}, bad("unknown form")
}

// cronSpec is AWS's six-field cron: minutes hours day-of-month month
// day-of-week year, day-of-week 1-7 with SUN=1. L, W and # are not
// supported.
type cronSpec struct {
	fields [6]map[int]bool // nil: any
}

var cronNames = map[string]int{"JAN": 1, "FEB": 2, "MAR": 3, "APR": 4, "MAY": 5, "JUN": 6, "JUL": 7, "AUG": 8, "SEP": 9, "OCT": 10, "NOV": 11, "DEC": 12,
	"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}

func parseCron(s string) (*cronSpec, error) {
	parts := strings.Fields(s)
	if len(parts) != 6 {
		return nil, fmt.Errorf("cron needs 6 fields, got %d", len(parts))
	}
	if (parts[2] == "?") == (parts[4] == "?") {
		return nil, fmt.Errorf("one of day-of-month and day-of-week must be ?")
	}
	bounds := [6][2]int{{0, 59}, {0, 23}, {1, 31}, {1, 12}, {1, 7}, {1970, 2199}}
	c := &cronSpec{}
	for i, p := range parts {
		if p == "*" || p == "?" {
			if p == "?" && i != 2 && i != 4 {
				return nil, fmt.Errorf("? is allowed only for day-of-month and day-of-week")
			}
			continue
		}
		set := map[int]bool{}
		for _, item := range strings.Split(p, ",") {
			rng, stepS, hasStep := strings.Cut(item, "/")
			step := 1
			if hasStep {
				n, err := strconv.Atoi(stepS)
				if err != nil || n <= 0 {
					return nil, fmt.Errorf("bad step in %q", item)
				}
				step = n
			}
			lo, hi := bounds[i][0], bounds[i][1]
			if rng != "*" {
				a, b, isRange := strings.Cut(rng, "-")
				var err error
				if lo, err = cronValue(a, bounds[i]); err != nil {
					return nil, err
				}
				hi = lo
				if isRange {
					if hi, err = cronValue(b, bounds[i]); err != nil {
						return nil, err
					}
				} else if hasStep {
					hi = bounds[i][1]
				}
				if hi < lo {
					return nil, fmt.Errorf("bad range %q", rng)
				}
			}
			for v := lo; v <= hi; v += step {
				set[v] = true
			}
		}
		c.fields[i] = set
	}
	return c, nil
}

func cronValue(s string, b [2]int) (int, error) {
	if v, ok := cronNames[strings.ToUpper(s)]; ok {
		return v, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < b[0] || v > b[1] {
		return 0, fmt.Errorf("value %q out of range %d-%d", s, b[0], b[1])
	}
	return v, nil
}

func (c *cronSpec) match(t time.Time) bool {
	vals := [6]int{t.Minute(), t.Hour(), t.Day(), int(t.Month()), int(t.Weekday()) + 1, t.Year()}
	for i, set := range c.fields {
		if set != nil && !set[vals[i]] {
			return false
		}
	}
	return true
}

// due reports whether the schedule fires in (from, to].
func (sch schedule) due(from, to time.Time, loc *time.Location, start time.Time) bool {
	switch {
	case !sch.at.IsZero():
		return !sch.at.After(to)
	case sch.rate > 0:
		// Fires at start + k*rate, k ≥ 1.
		if !to.After(start) {
			return false
		}
		k := to.Sub(start) / sch.rate
		fire := start.Add(k * sch.rate)
		return k >= 1 && fire.After(from)
	default:
		t := from.In(loc).Truncate(time.Minute).Add(time.Minute)
		// Look at most a day back: a server down longer runs the action once.
		if lim := to.Add(-24 * time.Hour); t.Before(lim) {
			t = lim.In(loc).Truncate(time.Minute)
		}
		for ; !t.After(to); t = t.Add(time.Minute) {
			if sch.cron.match(t.In(loc)) {
				return true
			}
		}
		return false
	}
}

func (s *Service) putScheduledAction(ctx context.Context, in *aastypes.PutScheduledActionRequest) (*aastypes.PutScheduledActionResponse, error) {
	r, err := checkRef(in.ServiceNamespace, in.ScalableDimension, in.ResourceId)
	if err != nil {
		return nil, err
	}
	name := ecstypes.Deref(in.ScheduledActionName)
	if name == "" {
		return nil, validation("1 validation error detected: Value null at 'scheduledActionName' failed to satisfy constraint: Member must not be null")
	}
	if !policyName.MatchString(name) || strings.ContainsAny(name, ":/") {
		return nil, validation("1 validation error detected: Value '%s' at 'scheduledActionName' failed to satisfy constraint: Member must satisfy regular expression pattern: (?!((^[ ]+.*)|(.*([\\u0000-\\u001f]|[\\u007f-\\u009f]|[:/|])+.*)|(.*[ ]+$))).+", name)
	}
	tz := ecstypes.Deref(in.Timezone)
	if tz == "" {
		tz = "UTC"
	}
	loc, err := time.LoadLocation(tz)
	if err != nil || tz == "Local" {
		return nil, validation("Invalid time zone %s: use an IANA time zone name such as Europe/Paris.", tz)
	}
	if a := in.ScalableTargetAction; a != nil {
		for n, p := range map[string]*int32{"minCapacity": a.MinCapacity, "maxCapacity": a.MaxCapacity} {
			if p != nil && *p < 0 {
				return nil, validation("1 validation error detected: Value '%d' at 'scalableTargetAction.%s' failed to satisfy constraint: Member must have value greater than or equal to 0", *p, n)
			}
		}
		if a.MinCapacity != nil && a.MaxCapacity != nil && *a.MinCapacity > *a.MaxCapacity {
			return nil, validation("Minimum capacity cannot be greater than maximum capacity")
		}
	}
	if in.StartTime != nil && in.EndTime != nil && !in.StartTime.Before(in.EndTime.Time) {
		return nil, validation("The end time must be after the start time.")
	}
	sc := scopeOf(ctx)
	now := s.now()
	key := r.key(sc) + "/" + name
	err = s.Store.Update(ctx, func(tx state.Tx) error {
		var t targetRecord
		ok, err := tx.Get(KindTarget, r.key(sc), &t)
		if err != nil {
			return err
		}
		if !ok {
			return notFound(r)
		}
		var rec scheduledRecord
		found, err := tx.Get(KindScheduled, key, &rec)
		if err != nil {
			return err
		}
		if !found {
			if in.Schedule == nil {
				return validation("Schedule is required for a new scheduled action.")
			}
			if in.ScalableTargetAction == nil {
				return validation("ScalableTargetAction is required for a new scheduled action.")
			}
			rec.Action = aastypes.ScheduledAction{
				ScheduledActionName: &name,
				ScheduledActionARN: ecstypes.String(fmt.Sprintf("arn:aws:autoscaling:%s:%s:scheduledAction:%s:resource/%s/%s:scheduledActionName/%s",
					sc.Region, sc.Account, newID(), r.namespace, r.resource, name)),
				ServiceNamespace: &r.namespace, ScalableDimension: &r.dimension, ResourceId: &r.resource,
				CreationTime: ecstypes.At(now),
			}
		}
		a := &rec.Action
		if in.Schedule != nil {
			a.Schedule = in.Schedule
		}
		if in.ScalableTargetAction != nil {
			a.ScalableTargetAction = in.ScalableTargetAction
		}
		if in.StartTime != nil {
			a.StartTime = in.StartTime
		}
		if in.EndTime != nil {
			a.EndTime = in.EndTime
		}
		a.Timezone = &tz
		if _, err := parseSchedule(*a.Schedule, loc); err != nil {
			return err
		}
		// A changed action is looked at from now on, and an at() may run again.
		rec.Checked, rec.Done = now, false
		return tx.Put(KindScheduled, key, &rec)
	})
	if err != nil {
		return nil, err
	}
	return &aastypes.PutScheduledActionResponse{}, nil
}

func (s *Service) describeScheduledActions(ctx context.Context, in *aastypes.DescribeScheduledActionsRequest) (*aastypes.DescribeScheduledActionsResponse, error) {
	q := query{namespace: in.ServiceNamespace, dimension: in.ScalableDimension, resources: one(in.ResourceId), names: in.ScheduledActionNames, max: in.MaxResults, token: in.NextToken}
	items, next, err := describe(ctx, s, KindScheduled, q, func(r *scheduledRecord) (*aastypes.ScheduledAction, string, string, string) {
		return &r.Action, *r.Action.ScalableDimension, *r.Action.ResourceId, *r.Action.ScheduledActionName
	})
	return &aastypes.DescribeScheduledActionsResponse{ScheduledActions: items, NextToken: next}, err
}

func (s *Service) deleteScheduledAction(ctx context.Context, in *aastypes.DeleteScheduledActionRequest) (*aastypes.DeleteScheduledActionResponse, error) {
	r, err := checkRef(in.ServiceNamespace, in.ScalableDimension, in.ResourceId)
	if err != nil {
		return nil, err
	}
	name := ecstypes.Deref(in.ScheduledActionName)
	if name == "" {
		return nil, validation("1 validation error detected: Value null at 'scheduledActionName' failed to satisfy constraint: Member must not be null")
	}
	sc := scopeOf(ctx)
	err = s.Store.Update(ctx, func(tx state.Tx) error {
		ok, err := tx.Delete(KindScheduled, r.key(sc)+"/"+name)
		if err == nil && !ok {
			err = awsapi.Errorf("ObjectNotFoundException", "No scheduled action found for service namespace: %s, resource ID: %s, scalable dimension: %s, scheduled action name: %s", r.namespace, r.resource, r.dimension, name)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &aastypes.DeleteScheduledActionResponse{}, nil
}

// runScheduled runs the scheduled actions that came due: each sets its
// target's min/max, and the count is moved into the new range.
func (s *Service) runScheduled(ctx context.Context, now time.Time) error {
	type fired struct {
		sc   model.Scope
		r    ref
		name string
		n    *int32
	}
	var done []fired
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		done = nil
		var recs []struct {
			key string
			rec scheduledRecord
		}
		err := tx.Scan(KindScheduled, "", "", 0, func(k string, data []byte) error {
			var rec scheduledRecord
			if err := json.Unmarshal(data, &rec); err != nil {
				return err
			}
			recs = append(recs, struct {
				key string
				rec scheduledRecord
			}{k, rec})
			return nil
		})
		if err != nil {
			return err
		}
		for _, e := range recs {
			rec, a := e.rec, e.rec.Action
			if rec.Done {
				continue
			}
			parts := strings.SplitN(e.key, "/", 3)
			r, err := checkRef(a.ServiceNamespace, a.ScalableDimension, a.ResourceId)
			if err != nil || len(parts) != 3 {
				continue
			}
			sc := model.Scope{Account: parts[0], Region: parts[1]}
			loc, err := time.LoadLocation(ecstypes.Deref(a.Timezone))
			if err != nil {
				continue
			}
			sch, err := parseSchedule(ecstypes.Deref(a.Schedule), loc)
			if err != nil {
				continue
			}
			from := rec.Checked
			rec.Checked = now
			start := a.CreationTime.Time
			if a.StartTime != nil {
				start = a.StartTime.Time
			}
			inWindow := !now.Before(start) && (a.EndTime == nil || !now.After(a.EndTime.Time))
			var t targetRecord
			ok, err := tx.Get(KindTarget, r.key(sc), &t)
			if err != nil {
				return err
			}
			suspended := ok && t.Target.SuspendedState != nil && ecstypes.Deref(t.Target.SuspendedState.ScheduledScalingSuspended)
			if ok && inWindow && !suspended && sch.due(from, now, loc, start) {
				if !sch.at.IsZero() {
					rec.Done = true
				}
				if act := a.ScalableTargetAction; act != nil {
					if act.MinCapacity != nil {
						t.Target.MinCapacity = act.MinCapacity
					}
					if act.MaxCapacity != nil {
						t.Target.MaxCapacity = act.MaxCapacity
					}
					if *t.Target.MinCapacity > *t.Target.MaxCapacity {
						t.Target.MaxCapacity = t.Target.MinCapacity
					}
				}
				if err := tx.Put(KindTarget, r.key(sc), &t); err != nil {
					return err
				}
				svc, err := activeService(tx, sc, r)
				if err != nil {
					return err
				}
				f := fired{sc: sc, r: r, name: *a.ScheduledActionName}
				if svc != nil {
					cur := ecstypes.Deref(svc.Service.DesiredCount)
					if cur < *t.Target.MinCapacity {
						f.n = t.Target.MinCapacity
					} else if cur > *t.Target.MaxCapacity {
						f.n = t.Target.MaxCapacity
					}
				}
				done = append(done, f)
			}
			if err := tx.Put(KindScheduled, e.key, &rec); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, f := range done {
		if f.n != nil {
			s.scale(ctx, f.sc, f.r, *f.n, "scheduled action name "+f.name+" was triggered",
				fmt.Sprintf("Setting desired count to %d.", *f.n), true)
		}
	}
	return nil
}
