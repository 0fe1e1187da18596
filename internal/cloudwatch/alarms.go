package cloudwatch

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/cloudwatch/cwtypes"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/state"
)

// Metric alarms: PutMetricAlarm, DescribeAlarms, DeleteAlarms and
// SetAlarmState, kept as state documents (cloudwatch.alarm, keyed
// account/region/name) since they are resources, not datapoints. A loop
// evaluates every alarm over the stored datapoints: the statistic of each of
// the last EvaluationPeriods periods against the threshold, DatapointsToAlarm
// of them breaching for ALARM, TreatMissingData for periods without data.
// Actions are ARNs handed to ActionHandler: on every state change, and for
// Application Auto Scaling policies again each period the alarm stays in
// the state (as CloudWatch re-invokes Auto Scaling actions), so a step
// policy keeps stepping until its cooldown or limits stop it.

const kindAlarm = "cloudwatch.alarm"

// alarmEvalInterval is how often alarms are evaluated; short, since test
// alarms use 10 s periods and a state change should not wait long.
const alarmEvalInterval = 5 * time.Second

// AlarmEvent is what an alarm action is told.
type AlarmEvent struct {
	Account, Region    string
	AlarmName          string
	AlarmARN           string
	State, Reason      string
	Threshold, Value   float64
	ComparisonOperator string
	Time               time.Time
}

// AlarmActionHandler runs alarm actions (Application Auto Scaling
// implements it for its policies' ARNs).
type AlarmActionHandler interface {
	AlarmAction(ctx context.Context, actionARN string, ev AlarmEvent) error
}

type alarmRecord struct {
	Alarm cwtypes.MetricAlarm `json:"alarm"`
	Tags  []*cwtypes.Tag      `json:"tags,omitempty"`
	// LastAction is when the actions of the current state last ran.
	LastAction *time.Time `json:"lastAction,omitempty"`
}

var alarmNameRE = regexp.MustCompile(`^[^\x00-\x1f]{1,255}$`)

func alarmKey(account, region, name string) string { return account + "/" + region + "/" + name }

func (s *Service) alarmOps() map[string]awsapi.Handler {
	return map[string]awsapi.Handler{
		"PutMetricAlarm": awsapi.Op(s.putMetricAlarm),
		"DescribeAlarms": awsapi.Op(s.describeAlarms),
		"DeleteAlarms":   awsapi.Op(s.deleteAlarms),
		"SetAlarmState":  awsapi.Op(s.setAlarmState),
	}
}

func (s *Service) alarmQueryOps() map[string]queryOp {
	return map[string]queryOp{
		"PutMetricAlarm": qop(s.putMetricAlarm),
		"DescribeAlarms": qop(s.describeAlarms),
		"DeleteAlarms":   qop(s.deleteAlarms),
		"SetAlarmState":  qop(s.setAlarmState),
	}
}

func (s *Service) noState() error {
	if s.State == nil {
		return awsapi.Errorf("InvalidAction", "Alarms are not available on this endpoint.")
	}
	return nil
}

func (s *Service) putMetricAlarm(ctx context.Context, in *cwtypes.PutMetricAlarmInput) (*struct{}, error) {
	if err := s.noState(); err != nil {
		return nil, err
	}
	id := awsapi.IdentityFrom(ctx)
	name := ecstypes.Deref(in.AlarmName)
	switch {
	case name == "":
		return nil, missing("AlarmName")
	case !alarmNameRE.MatchString(name):
		return nil, invalid("The parameter AlarmName must be 1 to 255 printable characters.")
	case len(in.Metrics) > 0 || in.ThresholdMetricId != nil || in.EvaluationCriteria != nil:
		return nil, invalid("Metric math alarms (Metrics, ThresholdMetricId) and PromQL alarms are not supported by this endpoint.")
	case ecstypes.Deref(in.Namespace) == "":
		return nil, missing("Namespace")
	case ecstypes.Deref(in.MetricName) == "":
		return nil, missing("MetricName")
	case in.ExtendedStatistic != nil:
		return nil, invalid("Percentile statistics (ExtendedStatistic) are not supported by this endpoint.")
	case ecstypes.Deref(in.Statistic) == "":
		return nil, missing("Statistic")
	case !contains(statistics, *in.Statistic):
		return nil, invalid("The parameter Statistic must be one of %s.", strings.Join(statistics, ", "))
	case in.Period == nil:
		return nil, missing("Period")
	case in.EvaluationPeriods == nil:
		return nil, missing("EvaluationPeriods")
	case *in.EvaluationPeriods < 1:
		return nil, invalid("The parameter EvaluationPeriods must be greater than or equal to 1.")
	case in.Threshold == nil:
		return nil, missing("Threshold")
	case ecstypes.Deref(in.ComparisonOperator) == "":
		return nil, missing("ComparisonOperator")
	}
	if err := checkPeriod("Period", *in.Period); err != nil {
		return nil, err
	}
	if p := *in.Period; p < 10 {
		return nil, invalid("The parameter Period must be 10, 30, or a multiple of 60 for alarms.")
	}
	if int64(*in.Period)*int64(*in.EvaluationPeriods) > 7*24*3600 {
		return nil, invalid("The evaluation period (Period x EvaluationPeriods) must not exceed one week.")
	}
	switch op := *in.ComparisonOperator; op {
	case "GreaterThanOrEqualToThreshold", "GreaterThanThreshold", "LessThanThreshold", "LessThanOrEqualToThreshold":
	default:
		if contains(cwtypes.Enums["ComparisonOperator"], op) {
			return nil, invalid("ComparisonOperator %s needs anomaly detection, which this endpoint does not support.", op)
		}
		return nil, invalid("The parameter ComparisonOperator must be one of GreaterThanOrEqualToThreshold, GreaterThanThreshold, LessThanThreshold, LessThanOrEqualToThreshold.")
	}
	if d := in.DatapointsToAlarm; d != nil && (*d < 1 || *d > *in.EvaluationPeriods) {
		return nil, invalid("DatapointsToAlarm must be between 1 and EvaluationPeriods (%d).", *in.EvaluationPeriods)
	}
	if t := ecstypes.Deref(in.TreatMissingData); t != "" && !contains([]string{"breaching", "notBreaching", "ignore", "missing"}, t) {
		return nil, invalid("The parameter TreatMissingData must be one of breaching, notBreaching, ignore, missing.")
	}
	if u := ecstypes.Deref(in.Unit); u != "" && !validUnit(u) {
		return nil, invalid("The parameter Unit must be a valid unit.")
	}
	dims, err := dimsOf(in.Dimensions)
	if err != nil {
		return nil, err
	}
	for _, list := range [][]string{in.AlarmActions, in.OKActions, in.InsufficientDataActions} {
		if len(list) > 5 {
			return nil, invalid("An alarm can have at most 5 actions per state.")
		}
		for _, a := range list {
			if !strings.HasPrefix(a, "arn:") {
				return nil, invalid("Invalid arn syntax: %s", a)
			}
		}
	}
	now := s.now()
	a := cwtypes.MetricAlarm{
		AlarmName: &name, AlarmArn: ecstypes.String(fmt.Sprintf("arn:aws:cloudwatch:%s:%s:alarm:%s", id.Region, id.Account, name)),
		AlarmDescription: in.AlarmDescription, ActionsEnabled: in.ActionsEnabled,
		AlarmActions: in.AlarmActions, OKActions: in.OKActions, InsufficientDataActions: in.InsufficientDataActions,
		Namespace: in.Namespace, MetricName: in.MetricName, Statistic: in.Statistic, Period: in.Period, Unit: in.Unit,
		EvaluationPeriods: in.EvaluationPeriods, DatapointsToAlarm: in.DatapointsToAlarm, Threshold: in.Threshold,
		ComparisonOperator: in.ComparisonOperator, TreatMissingData: in.TreatMissingData,
		AlarmConfigurationUpdatedTimestamp: ecstypes.At(now),
	}
	if a.ActionsEnabled == nil {
		a.ActionsEnabled = ecstypes.Bool(true)
	}
	if a.TreatMissingData == nil {
		a.TreatMissingData = ecstypes.String("missing")
	}
	for _, d := range dims {
		a.Dimensions = append(a.Dimensions, &cwtypes.Dimension{Name: ecstypes.String(d.Name), Value: ecstypes.String(d.Value)})
	}
	key := alarmKey(id.Account, id.Region, name)
	err = s.State.Update(ctx, func(tx state.Tx) error {
		var old alarmRecord
		ok, err := tx.Get(kindAlarm, key, &old)
		if err != nil {
			return err
		}
		rec := alarmRecord{Alarm: a, Tags: in.Tags}
		if ok {
			// Updating an alarm keeps its state (and its tags unless given).
			o := old.Alarm
			rec.Alarm.StateValue, rec.Alarm.StateReason, rec.Alarm.StateReasonData = o.StateValue, o.StateReason, o.StateReasonData
			rec.Alarm.StateUpdatedTimestamp, rec.Alarm.StateTransitionedTimestamp = o.StateUpdatedTimestamp, o.StateTransitionedTimestamp
			rec.LastAction = old.LastAction
			if in.Tags == nil {
				rec.Tags = old.Tags
			}
		} else {
			rec.Alarm.StateValue = ecstypes.String("INSUFFICIENT_DATA")
			rec.Alarm.StateReason = ecstypes.String("Unchecked: Initial alarm creation")
			rec.Alarm.StateUpdatedTimestamp, rec.Alarm.StateTransitionedTimestamp = ecstypes.At(now), ecstypes.At(now)
		}
		return tx.Put(kindAlarm, key, &rec)
	})
	if err != nil {
		return nil, err
	}
	s.kickAlarms()
	return &struct{}{}, nil
}

func (s *Service) describeAlarms(ctx context.Context, in *cwtypes.DescribeAlarmsInput) (*cwtypes.DescribeAlarmsOutput, error) {
	if err := s.noState(); err != nil {
		return nil, err
	}
	id := awsapi.IdentityFrom(ctx)
	if len(in.AlarmNames) > 0 && in.AlarmNamePrefix != nil {
		return nil, awsapi.Errorf("InvalidParameterCombination", "AlarmNames and AlarmNamePrefix cannot be used together.")
	}
	if v := ecstypes.Deref(in.StateValue); v != "" && !contains([]string{"OK", "ALARM", "INSUFFICIENT_DATA"}, v) {
		return nil, invalid("The parameter StateValue must be one of OK, ALARM, INSUFFICIENT_DATA.")
	}
	limit := int32(50)
	if in.MaxRecords != nil {
		if *in.MaxRecords < 1 || *in.MaxRecords > 100 {
			return nil, invalid("The parameter MaxRecords must be between 1 and 100.")
		}
		limit = *in.MaxRecords
	}
	var recs []alarmRecord
	err := s.State.View(ctx, func(tx state.Tx) error {
		var err error
		recs, err = state.List[alarmRecord](tx, kindAlarm, id.Account+"/"+id.Region+"/")
		return err
	})
	if err != nil {
		return nil, err
	}
	out := &cwtypes.DescribeAlarmsOutput{MetricAlarms: []*cwtypes.MetricAlarm{}}
	after := ecstypes.Deref(in.NextToken)
	if len(in.AlarmTypes) > 0 && !slices.Contains(in.AlarmTypes, "MetricAlarm") {
		return out, nil
	}
	for i := range recs {
		a := &recs[i].Alarm
		n := *a.AlarmName
		switch {
		case n <= after && after != "":
		case len(in.AlarmNames) > 0 && !slices.Contains(in.AlarmNames, n):
		case in.AlarmNamePrefix != nil && !strings.HasPrefix(n, *in.AlarmNamePrefix):
		case in.StateValue != nil && ecstypes.Deref(a.StateValue) != *in.StateValue:
		case in.ActionPrefix != nil && !slices.ContainsFunc(slices.Concat(a.AlarmActions, a.OKActions, a.InsufficientDataActions),
			func(x string) bool { return strings.HasPrefix(x, *in.ActionPrefix) }):
		default:
			if int32(len(out.MetricAlarms)) == limit {
				out.NextToken = out.MetricAlarms[len(out.MetricAlarms)-1].AlarmName
				return out, nil
			}
			out.MetricAlarms = append(out.MetricAlarms, a)
		}
	}
	return out, nil
}

func (s *Service) deleteAlarms(ctx context.Context, in *cwtypes.DeleteAlarmsInput) (*struct{}, error) {
	if err := s.noState(); err != nil {
		return nil, err
	}
	id := awsapi.IdentityFrom(ctx)
	if len(in.AlarmNames) == 0 {
		return nil, missing("AlarmNames")
	}
	if len(in.AlarmNames) > 100 {
		return nil, invalid("The collection AlarmNames must not have a size greater than 100.")
	}
	err := s.State.Update(ctx, func(tx state.Tx) error {
		for _, n := range in.AlarmNames {
			var rec alarmRecord
			if ok, err := tx.Get(kindAlarm, alarmKey(id.Account, id.Region, n), &rec); err != nil {
				return err
			} else if !ok {
				return awsapi.Errorf("ResourceNotFound", "Alarm %s does not exist.", n)
			}
		}
		for _, n := range in.AlarmNames {
			if _, err := tx.Delete(kindAlarm, alarmKey(id.Account, id.Region, n)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &struct{}{}, nil
}

// setAlarmState sets the state until the next evaluation, running the
// new state's actions, as CloudWatch does (for testing actions).
func (s *Service) setAlarmState(ctx context.Context, in *cwtypes.SetAlarmStateInput) (*struct{}, error) {
	if err := s.noState(); err != nil {
		return nil, err
	}
	id := awsapi.IdentityFrom(ctx)
	name, st, reason := ecstypes.Deref(in.AlarmName), ecstypes.Deref(in.StateValue), ecstypes.Deref(in.StateReason)
	switch {
	case name == "":
		return nil, missing("AlarmName")
	case st == "":
		return nil, missing("StateValue")
	case !contains([]string{"OK", "ALARM", "INSUFFICIENT_DATA"}, st):
		return nil, invalid("The parameter StateValue must be one of OK, ALARM, INSUFFICIENT_DATA.")
	case reason == "":
		return nil, missing("StateReason")
	case len(reason) > 1023:
		return nil, invalid("The parameter StateReason must be at most 1023 characters.")
	}
	if d := ecstypes.Deref(in.StateReasonData); d != "" && !strings.HasPrefix(strings.TrimSpace(d), "{") {
		return nil, invalid("The parameter StateReasonData must be JSON text.")
	}
	var fire *alarmRecord
	err := s.State.Update(ctx, func(tx state.Tx) error {
		var rec alarmRecord
		key := alarmKey(id.Account, id.Region, name)
		if ok, err := tx.Get(kindAlarm, key, &rec); err != nil {
			return err
		} else if !ok {
			return awsapi.Errorf("ResourceNotFound", "Alarm %s does not exist.", name)
		}
		now := s.now()
		changed := setState(&rec, st, reason, in.StateReasonData, now)
		if changed {
			rec.LastAction = &now
			fire = &rec
		}
		return tx.Put(kindAlarm, key, &rec)
	})
	if err != nil {
		return nil, err
	}
	if fire != nil {
		s.runActions(ctx, id.Account, id.Region, fire, math.NaN())
	}
	return &struct{}{}, nil
}

func setState(rec *alarmRecord, st, reason string, data *string, now time.Time) bool {
	a := &rec.Alarm
	changed := ecstypes.Deref(a.StateValue) != st
	a.StateValue, a.StateReason, a.StateReasonData = &st, &reason, data
	a.StateUpdatedTimestamp = ecstypes.At(now)
	if changed {
		a.StateTransitionedTimestamp = ecstypes.At(now)
	}
	return changed
}

// ---- evaluation ----

// StartAlarms evaluates the alarms every few seconds until ctx ends.
func (s *Service) StartAlarms(ctx context.Context) {
	if s.State == nil {
		return
	}
	s.alarmKick = make(chan struct{}, 1)
	go func() {
		t := time.NewTicker(alarmEvalInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-s.alarmKick:
			}
			if err := s.EvaluateAlarms(ctx); err != nil && ctx.Err() == nil {
				s.logger().Warn("cloudwatch: evaluate alarms", "err", err)
			}
		}
	}()
}

func (s *Service) kickAlarms() {
	select {
	case s.alarmKick <- struct{}{}:
	default:
	}
}

func (s *Service) logger() interface{ Warn(string, ...any) } {
	if s.Log != nil {
		return s.Log
	}
	return noLog{}
}

type noLog struct{}

func (noLog) Warn(string, ...any) {}

func breaches(op string, v, t float64) bool {
	switch op {
	case "GreaterThanOrEqualToThreshold":
		return v >= t
	case "GreaterThanThreshold":
		return v > t
	case "LessThanThreshold":
		return v < t
	default:
		return v <= t
	}
}

var opWords = map[string]string{
	"GreaterThanOrEqualToThreshold": "greater than or equal to",
	"GreaterThanThreshold":          "greater than",
	"LessThanThreshold":             "less than",
	"LessThanOrEqualToThreshold":    "less than or equal to",
}

// evaluate works out an alarm's state now: the newest value first.
func (s *Service) evaluate(ctx context.Context, account, region string, a *cwtypes.MetricAlarm, now time.Time) (st, reason string, value float64, err error) {
	m := MetricID{Account: account, Region: region, Namespace: *a.Namespace, Name: *a.MetricName}
	for _, d := range a.Dimensions {
		m.Dims = append(m.Dims, Dim{*d.Name, *d.Value})
	}
	p := time.Duration(*a.Period) * time.Second
	n := int(*a.EvaluationPeriods)
	need := n
	if a.DatapointsToAlarm != nil {
		need = int(*a.DatapointsToAlarm)
	}
	treat := ecstypes.Deref(a.TreatMissingData)
	op, th := *a.ComparisonOperator, *a.Threshold
	var vals []string
	breaching, present := 0, 0
	value = math.NaN()
	for k := 0; k < n; k++ {
		end := now.Add(-time.Duration(k) * p)
		st, ok, err := s.Store.Aggregate(ctx, m, end.Add(-p), end)
		if err != nil {
			return "", "", 0, err
		}
		if !ok {
			if treat == "breaching" {
				breaching++
			}
			continue
		}
		v := statValue(*a.Statistic, st)
		if math.IsNaN(value) {
			value = v
		}
		present++
		vals = append(vals, fmt.Sprintf("%s (%s)", trimFloat(v), end.Add(-p).UTC().Format("02/01/06 15:04:05")))
		if breaches(op, v, th) {
			breaching++
		}
	}
	if present == 0 && (treat == "missing" || treat == "") {
		return "INSUFFICIENT_DATA", fmt.Sprintf("Insufficient Data: %d datapoints were unknown.", n), value, nil
	}
	if (treat == "missing" || treat == "ignore" || treat == "") && present < need && breaching < need {
		// Too few datapoints to decide either way: the state stays.
		return ecstypes.Deref(a.StateValue), ecstypes.Deref(a.StateReason), value, nil
	}
	if breaching >= need {
		return "ALARM", fmt.Sprintf("Threshold Crossed: %d out of the last %d datapoints [%s] were %s the threshold (%s) (minimum %d datapoints for OK -> ALARM transition).",
			breaching, n, strings.Join(vals, ", "), opWords[op], trimFloat(th), need), value, nil
	}
	return "OK", fmt.Sprintf("Threshold Crossed: %d out of the last %d datapoints [%s] were not %s the threshold (%s) (minimum %d datapoints for ALARM -> OK transition).",
		present-breaching, n, strings.Join(vals, ", "), opWords[op], trimFloat(th), need), value, nil
}

func trimFloat(v float64) string { return fmt.Sprintf("%.1f", v) }

// EvaluateAlarms evaluates every alarm once, records state changes and runs
// actions.
func (s *Service) EvaluateAlarms(ctx context.Context) error {
	var keys []string
	err := s.State.View(ctx, func(tx state.Tx) error {
		return tx.Scan(kindAlarm, "", "", 0, func(key string, _ []byte) error {
			keys = append(keys, key)
			return nil
		})
	})
	if err != nil {
		return err
	}
	for _, key := range keys {
		parts := strings.SplitN(key, "/", 3)
		if len(parts) != 3 {
			continue
		}
		var rec alarmRecord
		err := s.State.View(ctx, func(tx state.Tx) error {
			_, err := tx.Get(kindAlarm, key, &rec)
			return err
		})
		if err != nil || rec.Alarm.AlarmName == nil {
			continue
		}
		now := s.now()
		// Once per period (at most a minute apart), as CloudWatch
		// evaluates; a state set by SetAlarmState holds until then. A
		// server that just started evaluates everything at once.
		every := min(time.Duration(ecstypes.Deref(rec.Alarm.Period))*time.Second, time.Minute)
		if u := rec.Alarm.StateUpdatedTimestamp; s.evaluated[key] && u != nil && now.Sub(u.Time) < every {
			continue
		}
		if s.evaluated == nil {
			s.evaluated = map[string]bool{}
		}
		s.evaluated[key] = true
		st, reason, value, err := s.evaluate(ctx, parts[0], parts[1], &rec.Alarm, now)
		if err != nil {
			return err
		}
		var fire *alarmRecord
		err = s.State.Update(ctx, func(tx state.Tx) error {
			var cur alarmRecord
			if ok, err := tx.Get(kindAlarm, key, &cur); err != nil || !ok {
				return err
			}
			changed := ecstypes.Deref(cur.Alarm.StateValue) != st
			period := time.Duration(ecstypes.Deref(cur.Alarm.Period)) * time.Second
			// Auto Scaling actions run again each period the state holds.
			again := !changed && cur.LastAction != nil && now.Sub(*cur.LastAction) >= period &&
				slices.ContainsFunc(actionsFor(&cur.Alarm, st), func(a string) bool { return strings.HasPrefix(a, "arn:aws:autoscaling:") })
			if !changed && !again && ecstypes.Deref(cur.Alarm.StateReason) == reason {
				return nil
			}
			setState(&cur, st, reason, nil, now)
			if changed || again {
				cur.LastAction = &now
				fire = &cur
			}
			return tx.Put(kindAlarm, key, &cur)
		})
		if err != nil {
			return err
		}
		if fire != nil {
			s.runActions(ctx, parts[0], parts[1], fire, value)
		}
	}
	return nil
}

func actionsFor(a *cwtypes.MetricAlarm, st string) []string {
	switch st {
	case "ALARM":
		return a.AlarmActions
	case "OK":
		return a.OKActions
	}
	return a.InsufficientDataActions
}

func (s *Service) runActions(ctx context.Context, account, region string, rec *alarmRecord, value float64) {
	a := &rec.Alarm
	if s.Actions == nil || !ecstypes.Deref(a.ActionsEnabled) {
		return
	}
	ev := AlarmEvent{Account: account, Region: region, AlarmName: *a.AlarmName, AlarmARN: ecstypes.Deref(a.AlarmArn),
		State: ecstypes.Deref(a.StateValue), Reason: ecstypes.Deref(a.StateReason), Threshold: ecstypes.Deref(a.Threshold),
		Value: value, ComparisonOperator: ecstypes.Deref(a.ComparisonOperator), Time: s.now()}
	for _, arn := range actionsFor(a, ev.State) {
		if err := s.Actions.AlarmAction(ctx, arn, ev); err != nil {
			s.logger().Warn("cloudwatch: alarm action", "alarm", ev.AlarmName, "action", arn, "err", err)
		}
	}
}
