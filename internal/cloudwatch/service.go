package cloudwatch

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/cloudwatch/cwtypes"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/state"
)

// TargetPrefix is CloudWatch's X-Amz-Target prefix. botocore sends the
// JSON 1.0 protocol with it (awsQueryCompatible error codes).
const TargetPrefix = "GraniteServiceVersion20100801"

// Service serves the CloudWatch metrics API.
type Service struct {
	Store *Store
	Log   *slog.Logger
	Now   func() time.Time

	// State keeps alarms and Actions runs their actions (alarms.go).
	State     state.Store
	Actions   AlarmActionHandler
	alarmKick chan struct{}
	evaluated map[string]bool // alarms evaluated since start (alarm loop only)
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// JSON returns the operations to mount on the AWS router.
func (s *Service) JSON() *awsapi.JSONService {
	ops := map[string]awsapi.Handler{
		"GetMetricStatistics": awsapi.Op(s.getMetricStatistics),
		"GetMetricData":       awsapi.Op(s.getMetricData),
		"ListMetrics":         awsapi.Op(s.listMetrics),
		"PutMetricData":       awsapi.Op(s.putMetricData),
	}
	maps.Copy(ops, s.alarmOps())
	return &awsapi.JSONService{TargetPrefix: TargetPrefix, Log: s.Log, Ops: ops}
}

func missing(name string) error {
	return awsapi.Errorf("MissingParameter", "The parameter %s is required.", name)
}

func invalid(format string, args ...any) error {
	return awsapi.Errorf("InvalidParameterValue", format, args...)
}

var statistics = []string{"SampleCount", "Average", "Sum", "Minimum", "Maximum"}

func statValue(stat string, st Stats) float64 {
	switch stat {
	case "SampleCount":
		return st.Count
	case "Average":
		return st.Sum / st.Count
	case "Sum":
		return st.Sum
	case "Minimum":
		return st.Min
	default:
		return st.Max
	}
}

func validUnit(u string) bool {
	for _, v := range cwtypes.Enums["StandardUnit"] {
		if v == u {
			return true
		}
	}
	return false
}

// checkPeriod accepts what CloudWatch does: 1, 5, 10, 30 or a multiple of 60.
func checkPeriod(name string, p int32) error {
	if p <= 0 {
		return invalid("The parameter %s must be greater than 0.", name)
	}
	if p != 1 && p != 5 && p != 10 && p != 30 && p%60 != 0 {
		return invalid("The parameter %s must be 1, 5, 10, 30, or a multiple of 60.", name)
	}
	return nil
}

func dimsOf(in []*cwtypes.Dimension) ([]Dim, error) {
	if len(in) > 30 {
		return nil, invalid("The collection Dimensions must not have a size greater than 30.")
	}
	seen := map[string]bool{}
	var out []Dim
	for _, d := range in {
		if d == nil || ecstypes.Deref(d.Name) == "" {
			return nil, missing("Dimensions.member.Name")
		}
		if d.Value == nil {
			return nil, missing("Dimensions.member.Value")
		}
		if seen[*d.Name] {
			return nil, awsapi.Errorf("InvalidParameterCombination", "No metric may have duplicate dimension names: %s.", *d.Name)
		}
		seen[*d.Name] = true
		out = append(out, Dim{*d.Name, *d.Value})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (s *Service) getMetricStatistics(ctx context.Context, in *cwtypes.GetMetricStatisticsInput) (*cwtypes.GetMetricStatisticsOutput, error) {
	id := awsapi.IdentityFrom(ctx)
	switch {
	case ecstypes.Deref(in.Namespace) == "":
		return nil, missing("Namespace")
	case ecstypes.Deref(in.MetricName) == "":
		return nil, missing("MetricName")
	case in.StartTime == nil:
		return nil, missing("StartTime")
	case in.EndTime == nil:
		return nil, missing("EndTime")
	case in.Period == nil:
		return nil, missing("Period")
	}
	if len(in.Statistics) == 0 && len(in.ExtendedStatistics) == 0 {
		return nil, awsapi.Errorf("InvalidParameterCombination", "Must specify either Statistics or ExtendedStatistics, but not both.")
	}
	if len(in.ExtendedStatistics) > 0 {
		return nil, invalid("ExtendedStatistics (percentiles) are not supported by this endpoint.")
	}
	if len(in.Statistics) > 5 {
		return nil, invalid("The collection Statistics must not have a size greater than 5.")
	}
	for _, st := range in.Statistics {
		if !contains(statistics, st) {
			return nil, invalid("The parameter Statistics.member.1 must be a value in the set [ Maximum, Sum, SampleCount, Average, Minimum ].")
		}
	}
	if err := checkPeriod("Period", *in.Period); err != nil {
		return nil, err
	}
	unit := ecstypes.Deref(in.Unit)
	if unit != "" && !validUnit(unit) {
		return nil, invalid("The parameter Unit must be a value in the set %v.", cwtypes.Enums["StandardUnit"])
	}
	start, end := in.StartTime.Time, in.EndTime.Time
	if !start.Before(end) {
		return nil, invalid("The parameter StartTime must be less than the parameter EndTime.")
	}
	period := time.Duration(*in.Period) * time.Second
	if n := end.Sub(start) / period; n > 1440 {
		return nil, awsapi.Errorf("InvalidParameterCombination", "You have requested up to %d datapoints, which exceeds the limit of 1,440. You may reduce the datapoints requested by increasing Period, or decreasing the time range.", n)
	}
	dims, err := dimsOf(in.Dimensions)
	if err != nil {
		return nil, err
	}
	m := MetricID{Account: id.Account, Region: id.Region, Namespace: *in.Namespace, Name: *in.MetricName, Dims: dims}
	buckets, err := s.Store.Query(ctx, m, start, end, period, unit)
	if err != nil {
		return nil, err
	}
	out := &cwtypes.GetMetricStatisticsOutput{Label: in.MetricName, Datapoints: []*cwtypes.Datapoint{}}
	for _, b := range buckets {
		dp := &cwtypes.Datapoint{Timestamp: ecstypes.At(b.Start), Unit: ecstypes.String(b.Unit)}
		for _, st := range in.Statistics {
			v := statValue(st, b.Stats)
			switch st {
			case "SampleCount":
				dp.SampleCount = &v
			case "Average":
				dp.Average = &v
			case "Sum":
				dp.Sum = &v
			case "Minimum":
				dp.Minimum = &v
			case "Maximum":
				dp.Maximum = &v
			}
		}
		out.Datapoints = append(out.Datapoints, dp)
	}
	return out, nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

var queryID = regexp.MustCompile(`^[a-z][a-zA-Z0-9_]*$`)

func (s *Service) getMetricData(ctx context.Context, in *cwtypes.GetMetricDataInput) (*cwtypes.GetMetricDataOutput, error) {
	id := awsapi.IdentityFrom(ctx)
	switch {
	case len(in.MetricDataQueries) == 0:
		return nil, missing("MetricDataQueries")
	case in.StartTime == nil:
		return nil, missing("StartTime")
	case in.EndTime == nil:
		return nil, missing("EndTime")
	}
	if len(in.MetricDataQueries) > 500 {
		return nil, invalid("The collection MetricDataQueries must not have a size greater than 500.")
	}
	start, end := in.StartTime.Time, in.EndTime.Time
	if !start.Before(end) {
		return nil, invalid("The parameter StartTime must be less than the parameter EndTime.")
	}
	desc := true
	switch ecstypes.Deref(in.ScanBy) {
	case "", "TimestampDescending":
	case "TimestampAscending":
		desc = false
	default:
		return nil, invalid("The parameter ScanBy must be a value in the set [ TimestampDescending, TimestampAscending ].")
	}
	maxPoints := int(ecstypes.Deref(in.MaxDatapoints))
	if maxPoints <= 0 {
		maxPoints = 100800
	}
	ids := map[string]bool{}
	out := &cwtypes.GetMetricDataOutput{MetricDataResults: []*cwtypes.MetricDataResult{}, Messages: []*cwtypes.MessageData{}}
	total := 0
	for i, q := range in.MetricDataQueries {
		if q == nil || ecstypes.Deref(q.Id) == "" {
			return nil, missing(fmt.Sprintf("MetricDataQueries.member.%d.Id", i+1))
		}
		if !queryID.MatchString(*q.Id) {
			return nil, invalid("The value %s for parameter MetricDataQueries.member.%d.Id is invalid: it must start with a lowercase letter and contain only letters, digits and underscores.", *q.Id, i+1)
		}
		if ids[*q.Id] {
			return nil, invalid("The values for parameter id in MetricDataQueries are not unique.")
		}
		ids[*q.Id] = true
		if q.Expression != nil {
			if q.MetricStat != nil {
				return nil, awsapi.Errorf("InvalidParameterCombination", "Exactly one of MetricStat and Expression must be specified in MetricDataQueries.member.%d.", i+1)
			}
			return nil, invalid("Metric math expressions are not supported by this endpoint (MetricDataQueries.member.%d.Expression).", i+1)
		}
		ms := q.MetricStat
		if ms == nil {
			return nil, awsapi.Errorf("InvalidParameterCombination", "Exactly one of MetricStat and Expression must be specified in MetricDataQueries.member.%d.", i+1)
		}
		if ms.Metric == nil || ecstypes.Deref(ms.Metric.MetricName) == "" || ecstypes.Deref(ms.Metric.Namespace) == "" {
			return nil, missing(fmt.Sprintf("MetricDataQueries.member.%d.MetricStat.Metric", i+1))
		}
		if ms.Period == nil {
			return nil, missing(fmt.Sprintf("MetricDataQueries.member.%d.MetricStat.Period", i+1))
		}
		if err := checkPeriod(fmt.Sprintf("MetricDataQueries.member.%d.MetricStat.Period", i+1), *ms.Period); err != nil {
			return nil, err
		}
		stat := ecstypes.Deref(ms.Stat)
		if !contains(statistics, stat) {
			return nil, invalid("The value %q for parameter MetricDataQueries.member.%d.MetricStat.Stat is not supported; use one of %v.", stat, i+1, statistics)
		}
		unit := ecstypes.Deref(ms.Unit)
		if unit != "" && !validUnit(unit) {
			return nil, invalid("The parameter MetricDataQueries.member.%d.MetricStat.Unit must be a value in the set %v.", i+1, cwtypes.Enums["StandardUnit"])
		}
		dims, err := dimsOf(ms.Metric.Dimensions)
		if err != nil {
			return nil, err
		}
		if q.ReturnData != nil && !*q.ReturnData {
			continue
		}
		m := MetricID{Account: id.Account, Region: id.Region, Namespace: *ms.Metric.Namespace, Name: *ms.Metric.MetricName, Dims: dims}
		buckets, err := s.Store.Query(ctx, m, start, end, time.Duration(*ms.Period)*time.Second, unit)
		if err != nil {
			return nil, err
		}
		if desc {
			for l, r := 0, len(buckets)-1; l < r; l, r = l+1, r-1 {
				buckets[l], buckets[r] = buckets[r], buckets[l]
			}
		}
		label := ecstypes.Deref(q.Label)
		if label == "" {
			label = *ms.Metric.MetricName
		}
		res := &cwtypes.MetricDataResult{Id: q.Id, Label: &label, StatusCode: ecstypes.String("Complete"), Timestamps: []cwtypes.Time{}, Values: []float64{}, Messages: []*cwtypes.MessageData{}}
		for _, b := range buckets {
			if total >= maxPoints {
				res.StatusCode = ecstypes.String("PartialData")
				break
			}
			v := statValue(stat, b.Stats)
			if math.IsNaN(v) {
				continue
			}
			res.Timestamps = append(res.Timestamps, cwtypes.Time{Time: b.Start})
			res.Values = append(res.Values, v)
			total++
		}
		out.MetricDataResults = append(out.MetricDataResults, res)
	}
	return out, nil
}

const listPage = 500

func (s *Service) listMetrics(ctx context.Context, in *cwtypes.ListMetricsInput) (*cwtypes.ListMetricsOutput, error) {
	id := awsapi.IdentityFrom(ctx)
	since := s.now().Add(-14 * 24 * time.Hour)
	switch ecstypes.Deref(in.RecentlyActive) {
	case "":
	case "PT3H":
		since = s.now().Add(-3 * time.Hour)
	default:
		return nil, invalid("The parameter RecentlyActive must be a value in the set [ PT3H ].")
	}
	if len(in.Dimensions) > 10 {
		return nil, invalid("The collection Dimensions must not have a size greater than 10.")
	}
	for _, f := range in.Dimensions {
		if f == nil || ecstypes.Deref(f.Name) == "" {
			return nil, missing("Dimensions.member.Name")
		}
	}
	skip := 0
	if tok := ecstypes.Deref(in.NextToken); tok != "" {
		n, err := strconv.Atoi(tok)
		if err != nil || n < 0 {
			return nil, awsapi.Errorf("InvalidNextToken", "The service couldn't process the provided NextToken.")
		}
		skip = n
	}
	all, err := s.Store.Metrics(ctx, id.Account, id.Region, since)
	if err != nil {
		return nil, err
	}
	out := &cwtypes.ListMetricsOutput{Metrics: []*cwtypes.Metric{}}
	matched := 0
	for _, m := range all {
		if ns := ecstypes.Deref(in.Namespace); ns != "" && ns != m.Namespace {
			continue
		}
		if n := ecstypes.Deref(in.MetricName); n != "" && n != m.Name {
			continue
		}
		if !dimsMatch(m.Dims, in.Dimensions) {
			continue
		}
		matched++
		if matched <= skip {
			continue
		}
		if len(out.Metrics) == listPage {
			out.NextToken = ecstypes.String(strconv.Itoa(skip + listPage))
			break
		}
		cm := &cwtypes.Metric{Namespace: ecstypes.String(m.Namespace), MetricName: ecstypes.String(m.Name), Dimensions: []*cwtypes.Dimension{}}
		for _, d := range m.Dims {
			cm.Dimensions = append(cm.Dimensions, &cwtypes.Dimension{Name: ecstypes.String(d.Name), Value: ecstypes.String(d.Value)})
		}
		out.Metrics = append(out.Metrics, cm)
	}
	return out, nil
}

// dimsMatch: every filter names a dimension the metric has, with its
// value when the filter gives one.
func dimsMatch(dims []Dim, filters []*cwtypes.DimensionFilter) bool {
	for _, f := range filters {
		ok := false
		for _, d := range dims {
			if d.Name == *f.Name && (f.Value == nil || *f.Value == d.Value) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func (s *Service) putMetricData(ctx context.Context, in *cwtypes.PutMetricDataInput) (*struct{}, error) {
	id := awsapi.IdentityFrom(ctx)
	ns := ecstypes.Deref(in.Namespace)
	if ns == "" {
		return nil, missing("Namespace")
	}
	if strings.HasPrefix(ns, "AWS/") {
		return nil, invalid("The value AWS/ for parameter Namespace is invalid.")
	}
	if len(in.MetricData) == 0 {
		return nil, missing("MetricData")
	}
	if len(in.MetricData) > 1000 {
		return nil, invalid("The collection MetricData must not have a size greater than 1000.")
	}
	now := s.now()
	var points []Point
	for i, d := range in.MetricData {
		n := i + 1
		if d == nil || ecstypes.Deref(d.MetricName) == "" {
			return nil, missing(fmt.Sprintf("MetricData.member.%d.MetricName", n))
		}
		dims, err := dimsOf(d.Dimensions)
		if err != nil {
			return nil, err
		}
		unit := ecstypes.Deref(d.Unit)
		if unit == "" {
			unit = "None"
		}
		if !validUnit(unit) {
			return nil, invalid("The parameter MetricData.member.%d.Unit must be a value in the set %v.", n, cwtypes.Enums["StandardUnit"])
		}
		at := now
		if d.Timestamp != nil {
			at = d.Timestamp.Time
			if at.Before(now.Add(-14*24*time.Hour)) || at.After(now.Add(2*time.Hour)) {
				return nil, invalid("The parameter MetricData.member.%d.Timestamp must specify a time no more than two weeks in the past and no more than two hours in the future.", n)
			}
		}
		var st Stats
		kinds := 0
		if d.Value != nil {
			kinds++
			st = Of(*d.Value)
		}
		if sv := d.StatisticValues; sv != nil {
			kinds++
			if sv.Sum == nil || sv.SampleCount == nil || sv.Minimum == nil || sv.Maximum == nil {
				return nil, missing(fmt.Sprintf("MetricData.member.%d.StatisticValues", n))
			}
			if *sv.SampleCount <= 0 {
				return nil, invalid("The parameter MetricData.member.%d.StatisticValues.SampleCount must be greater than 0.", n)
			}
			st = Stats{Sum: *sv.Sum, Count: *sv.SampleCount, Min: *sv.Minimum, Max: *sv.Maximum}
		}
		if len(d.Values) > 0 {
			kinds++
			if len(d.Counts) > 0 && len(d.Counts) != len(d.Values) {
				return nil, invalid("The parameters MetricData.member.%d.Values and MetricData.member.%d.Counts must be of the same size.", n, n)
			}
			for j, v := range d.Values {
				c := 1.0
				if len(d.Counts) > 0 {
					c = d.Counts[j]
				}
				if c <= 0 {
					continue
				}
				st.Add(Stats{Sum: v * c, Count: c, Min: v, Max: v})
			}
		}
		if kinds == 1 && st.Count == 0 {
			return nil, invalid("The parameter MetricData.member.%d.Counts must contain a positive count.", n)
		}
		if kinds != 1 {
			return nil, awsapi.Errorf("InvalidParameterCombination", "The parameters MetricData.member.%d.Value, MetricData.member.%d.StatisticValues and MetricData.member.%d.Values are mutually exclusive and you have specified %d of them.", n, n, n, kinds)
		}
		for _, v := range []float64{st.Sum, st.Count, st.Min, st.Max} {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, invalid("The value for parameter MetricData.member.%d must be a finite number.", n)
			}
		}
		points = append(points, Point{Metric: MetricID{Account: id.Account, Region: id.Region, Namespace: ns, Name: *d.MetricName, Dims: dims}, Time: at, Unit: unit, Stats: st})
	}
	if err := s.Store.Put(ctx, points); err != nil {
		return nil, err
	}
	return &struct{}{}, nil
}
