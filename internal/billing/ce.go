package billing

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/state"
)

// CETargetPrefix is Cost Explorer's JSON 1.1 target prefix.
const CETargetPrefix = "AWSInsightsIndexService"

// Service answers billing queries: the Cost Explorer subset and Gantry's
// own report and budget operations.
type Service struct {
	Ledger *Ledger
	Meter  *Meter // run before answering so running tasks show cost to now
	Store  state.Store
	Log    *slog.Logger
	Now    func() time.Time
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Service) fresh(ctx context.Context) error {
	if s.Meter == nil {
		return nil
	}
	return s.Meter.Fresh(ctx, time.Second)
}

// CostExplorer is the Cost Explorer JSON service.
func (s *Service) CostExplorer() *awsapi.JSONService {
	return &awsapi.JSONService{TargetPrefix: CETargetPrefix, Log: s.Log, Ops: map[string]awsapi.Handler{
		"GetCostAndUsage": awsapi.Op(s.getCostAndUsage),
		"GetCostForecast": awsapi.Op(s.getCostForecast),
	}}
}

func validation(format string, args ...any) *awsapi.Error {
	return awsapi.Errorf("ValidationException", format, args...)
}

// Cost Explorer shapes (botocore ce 2017-10-25), the members Gantry uses.
type DateInterval struct {
	Start *string `json:"Start,omitempty"`
	End   *string `json:"End,omitempty"`
}

type GroupDefinition struct {
	Type *string `json:"Type,omitempty"`
	Key  *string `json:"Key,omitempty"`
}

type GetCostAndUsageInput struct {
	TimePeriod     *DateInterval      `json:"TimePeriod"`
	Granularity    *string            `json:"Granularity"`
	Filter         *Filter            `json:"Filter"`
	Metrics        []string           `json:"Metrics"`
	GroupBy        []*GroupDefinition `json:"GroupBy"`
	BillingViewArn *string            `json:"BillingViewArn"`
	NextPageToken  *string            `json:"NextPageToken"`
}

type MetricValue struct {
	Amount string `json:"Amount"`
	Unit   string `json:"Unit"`
}

type CEGroup struct {
	Keys    []string               `json:"Keys"`
	Metrics map[string]MetricValue `json:"Metrics"`
}

type ResultByTime struct {
	TimePeriod DateInterval           `json:"TimePeriod"`
	Total      map[string]MetricValue `json:"Total"`
	Groups     []CEGroup              `json:"Groups"`
	Estimated  bool                   `json:"Estimated"`
}

type DimensionValuesWithAttributes struct {
	Value      string            `json:"Value"`
	Attributes map[string]string `json:"Attributes"`
}

type GetCostAndUsageOutput struct {
	GroupDefinitions         []*GroupDefinition              `json:"GroupDefinitions,omitempty"`
	ResultsByTime            []ResultByTime                  `json:"ResultsByTime"`
	DimensionValueAttributes []DimensionValuesWithAttributes `json:"DimensionValueAttributes"`
}

var costMetrics = []string{"UnblendedCost", "BlendedCost", "AmortizedCost", "NetUnblendedCost", "NetAmortizedCost"}

// parseCEDate reads a YearMonthDay: 2026-01-31 or 2026-01-31T13:00:00Z.
func parseCEDate(field string, s *string) (time.Time, bool, error) {
	if s == nil || *s == "" {
		return time.Time{}, false, validation("%s is required.", field)
	}
	if t, err := time.Parse("2006-01-02", *s); err == nil {
		return t, false, nil
	}
	if t, err := time.Parse("2006-01-02T15:04:05Z", *s); err == nil {
		return t, true, nil
	}
	return time.Time{}, false, validation("%s '%s' is not a date of the form yyyy-MM-dd or yyyy-MM-ddTHH:mm:ssZ.", field, *s)
}

func parsePeriod(p *DateInterval, granularity string) (start, end time.Time, err error) {
	if p == nil {
		return start, end, validation("TimePeriod is required.")
	}
	start, sh, err := parseCEDate("TimePeriod.Start", p.Start)
	if err != nil {
		return
	}
	end, eh, err := parseCEDate("TimePeriod.End", p.End)
	if err != nil {
		return
	}
	if (sh || eh) && granularity != "HOURLY" {
		return start, end, validation("TimePeriod: times of day are only valid with HOURLY granularity.")
	}
	if !start.Before(end) {
		return start, end, validation("TimePeriod: Start date (and hour) should be before end date (and hour).")
	}
	return start, end, nil
}

func checkGranularity(g *string) (string, error) {
	if g == nil || *g == "" {
		return "", validation("Granularity is required: DAILY, MONTHLY or HOURLY.")
	}
	if !slices.Contains([]string{"DAILY", "MONTHLY", "HOURLY"}, *g) {
		return "", validation("Granularity '%s' is not valid; use DAILY, MONTHLY or HOURLY.", *g)
	}
	return *g, nil
}

func (s *Service) getCostAndUsage(ctx context.Context, in *GetCostAndUsageInput) (*GetCostAndUsageOutput, error) {
	gran, err := checkGranularity(in.Granularity)
	if err != nil {
		return nil, err
	}
	start, end, err := parsePeriod(in.TimePeriod, gran)
	if err != nil {
		return nil, err
	}
	if gran == "HOURLY" && (start.Unix()%3600 != 0 || end.Unix()%3600 != 0) {
		return nil, validation("TimePeriod: with HOURLY granularity, Start and End must be whole hours.")
	}
	if len(in.Metrics) == 0 {
		return nil, validation("Metrics is required: at least one of UnblendedCost, BlendedCost, AmortizedCost, NetUnblendedCost, NetAmortizedCost, UsageQuantity.")
	}
	for _, m := range in.Metrics {
		if m != "UsageQuantity" && !slices.Contains(costMetrics, m) {
			return nil, validation("Metrics: unsupported metric '%s'; use UnblendedCost, BlendedCost, AmortizedCost, NetUnblendedCost, NetAmortizedCost or UsageQuantity.", m)
		}
	}
	if in.NextPageToken != nil && *in.NextPageToken != "" {
		return nil, awsapi.Errorf("InvalidNextTokenException", "NextPageToken: this token was not issued by this endpoint.")
	}
	if in.BillingViewArn != nil {
		return nil, awsapi.Errorf("ResourceNotFoundException", "BillingViewArn: billing view %s does not exist.", *in.BillingViewArn)
	}
	if len(in.GroupBy) > 2 {
		return nil, validation("GroupBy: at most 2 group definitions are allowed, got %d.", len(in.GroupBy))
	}
	var dims []Dim
	seen := map[string]bool{}
	for i, g := range in.GroupBy {
		if g == nil || g.Type == nil || g.Key == nil {
			return nil, validation("GroupBy[%d]: Type and Key are required.", i)
		}
		var d Dim
		switch *g.Type {
		case "DIMENSION":
			switch *g.Key {
			case "SERVICE":
				d = Dim{Kind: DimAWSSvc}
			case "USAGE_TYPE":
				d = Dim{Kind: DimUsageType}
			case "LINKED_ACCOUNT":
				d = Dim{Kind: DimAccount}
			case "REGION":
				d = Dim{Kind: DimRegion}
			default:
				return nil, validation("GroupBy[%d].Key: dimension '%s' is not supported; use SERVICE, USAGE_TYPE, LINKED_ACCOUNT or REGION.", i, *g.Key)
			}
		case "TAG":
			if *g.Key == "" {
				return nil, validation("GroupBy[%d].Key: a tag key is required.", i)
			}
			d = Dim{Kind: DimTag, Key: *g.Key}
		case "COST_CATEGORY":
			return nil, validation("GroupBy[%d].Type: Gantry has no cost categories.", i)
		default:
			return nil, validation("GroupBy[%d].Type '%s' is not valid; use DIMENSION, TAG or COST_CATEGORY.", i, *g.Type)
		}
		if seen[d.String()] {
			return nil, validation("GroupBy: duplicate group definition %s %s.", *g.Type, *g.Key)
		}
		seen[d.String()] = true
		dims = append(dims, d)
	}
	if in.Filter != nil {
		if err := in.Filter.Validate("Filter"); err != nil {
			return nil, validation("%s", err.Error())
		}
	}
	if err := s.fresh(ctx); err != nil {
		return nil, err
	}
	tdim := map[string]Dim{"HOURLY": {Kind: DimHour}, "DAILY": {Kind: DimDay}, "MONTHLY": {Kind: DimMonth}}[gran]
	id := awsapi.IdentityFrom(ctx)
	res, err := s.Ledger.Run(Query{Account: id.Account, From: start, To: end, GroupBy: append([]Dim{tdim}, dims...), Filter: in.Filter})
	if err != nil {
		return nil, err
	}
	now := s.now()
	out := &GetCostAndUsageOutput{GroupDefinitions: in.GroupBy, ResultsByTime: []ResultByTime{}, DimensionValueAttributes: []DimensionValuesWithAttributes{}}
	byPeriod := map[int64][]Group{}
	for _, g := range res.Groups {
		byPeriod[g.raw[0]] = append(byPeriod[g.raw[0]], g)
	}
	accounts := map[string]bool{}
	for _, p := range periods(start, end, gran) {
		r := ResultByTime{TimePeriod: formatPeriod(p[0], p[1], gran), Total: map[string]MetricValue{}, Groups: []CEGroup{}, Estimated: p[1].After(now)}
		key := p[0].Unix()
		if gran == "MONTHLY" {
			key = time.Date(p[0].Year(), p[0].Month(), 1, 0, 0, 0, 0, time.UTC).Unix()
		}
		groups := byPeriod[key]
		if len(dims) == 0 {
			var a Agg
			for _, g := range groups {
				a.plus(&g.Agg)
			}
			r.Total = metrics(in.Metrics, &a, "")
		} else {
			for _, g := range groups {
				keys := make([]string, len(dims))
				ut := ""
				for i, d := range dims {
					keys[i] = g.Keys[i+1]
					switch d.Kind {
					case DimTag:
						keys[i] = d.Key + "$" + keys[i]
					case DimUsageType:
						ut = keys[i]
					case DimAccount:
						accounts[keys[i]] = true
					}
				}
				r.Groups = append(r.Groups, CEGroup{Keys: keys, Metrics: metrics(in.Metrics, &g.Agg, ut)})
			}
		}
		out.ResultsByTime = append(out.ResultsByTime, r)
	}
	for _, a := range sortedKeys(accounts) {
		out.DimensionValueAttributes = append(out.DimensionValueAttributes, DimensionValuesWithAttributes{Value: a, Attributes: map[string]string{"description": "Gantry account " + a}})
	}
	return out, nil
}

func sortedKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// periods splits [start, end) by granularity; months are calendar months
// clipped to the interval.
func periods(start, end time.Time, gran string) [][2]time.Time {
	var out [][2]time.Time
	for t := start; t.Before(end); {
		var next time.Time
		switch gran {
		case "HOURLY":
			next = t.Add(time.Hour)
		case "DAILY":
			next = time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, time.UTC)
		default:
			next = time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
		}
		if next.After(end) {
			next = end
		}
		out = append(out, [2]time.Time{t, next})
		t = next
	}
	return out
}

func formatPeriod(a, b time.Time, gran string) DateInterval {
	layout := "2006-01-02"
	if gran == "HOURLY" {
		layout = "2006-01-02T15:04:05Z"
	}
	sa, sb := a.UTC().Format(layout), b.UTC().Format(layout)
	return DateInterval{Start: &sa, End: &sb}
}

// metrics renders an aggregate as Cost Explorer metric values. Every cost
// metric is the unblended cost: Gantry has no reservations or discounts.
func metrics(names []string, a *Agg, usageType string) map[string]MetricValue {
	out := map[string]MetricValue{}
	for _, n := range names {
		if n == "UsageQuantity" {
			out[n] = MetricValue{Amount: UsageHours(a).String(), Unit: usageUnit(usageType)}
			continue
		}
		out[n] = MetricValue{Amount: a.CostDecimal().String(), Unit: "USD"}
	}
	return out
}

func usageUnit(ut string) string {
	switch {
	case ut == "":
		return "N/A"
	case strings.Contains(ut, "vCPU-Hours"):
		return "Hrs"
	default:
		return "GB-Hours"
	}
}

// UsageHours is the aggregate's usage quantity in unit-hours, as Cost
// Explorer sums UsageQuantity across usage types.
func UsageHours(a *Agg) decimal.Decimal {
	sum := decimal.Zero
	for k := range kinds {
		sum = sum.Add(a.Hours(k))
	}
	return sum
}

// Forecast shapes.
type GetCostForecastInput struct {
	TimePeriod              *DateInterval `json:"TimePeriod"`
	Metric                  *string       `json:"Metric"`
	Granularity             *string       `json:"Granularity"`
	Filter                  *Filter       `json:"Filter"`
	BillingViewArn          *string       `json:"BillingViewArn"`
	PredictionIntervalLevel *int32        `json:"PredictionIntervalLevel"`
}

type ForecastResult struct {
	TimePeriod                   DateInterval `json:"TimePeriod"`
	MeanValue                    string       `json:"MeanValue"`
	PredictionIntervalLowerBound string       `json:"PredictionIntervalLowerBound"`
	PredictionIntervalUpperBound string       `json:"PredictionIntervalUpperBound"`
}

type GetCostForecastOutput struct {
	Total                 MetricValue      `json:"Total"`
	ForecastResultsByTime []ForecastResult `json:"ForecastResultsByTime"`
}

var forecastMetrics = []string{"BLENDED_COST", "UNBLENDED_COST", "AMORTIZED_COST", "NET_UNBLENDED_COST", "NET_AMORTIZED_COST", "USAGE_QUANTITY", "NORMALIZED_USAGE_AMOUNT"}

// getCostForecast projects the recent trend: the cost per hour over the
// last 24 hours (or since the first usage, if later), carried forward over
// the requested period. The prediction interval spans the cheapest and the
// dearest hour seen in that window.
func (s *Service) getCostForecast(ctx context.Context, in *GetCostForecastInput) (*GetCostForecastOutput, error) {
	if in.Metric == nil || !slices.Contains(forecastMetrics, *in.Metric) {
		return nil, validation("Metric '%s' is not valid; use one of %s.", deref(in.Metric), strings.Join(forecastMetrics, ", "))
	}
	if *in.Metric == "NORMALIZED_USAGE_AMOUNT" {
		return nil, validation("Metric NORMALIZED_USAGE_AMOUNT is not supported by Gantry.")
	}
	gran, err := checkGranularity(in.Granularity)
	if err != nil {
		return nil, err
	}
	start, end, err := parsePeriod(in.TimePeriod, gran)
	if err != nil {
		return nil, err
	}
	now := s.now().UTC()
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	if start.Before(today) {
		return nil, validation("TimePeriod.Start: the forecast period must start today (%s) or later.", today.Format("2006-01-02"))
	}
	if lvl := in.PredictionIntervalLevel; lvl != nil && (*lvl < 51 || *lvl > 99) {
		return nil, validation("PredictionIntervalLevel must be between 51 and 99.")
	}
	if in.Filter != nil {
		if err := in.Filter.Validate("Filter"); err != nil {
			return nil, validation("%s", err.Error())
		}
	}
	if in.BillingViewArn != nil {
		return nil, awsapi.Errorf("ResourceNotFoundException", "BillingViewArn: billing view %s does not exist.", *in.BillingViewArn)
	}
	if err := s.fresh(ctx); err != nil {
		return nil, err
	}
	id := awsapi.IdentityFrom(ctx)
	thisHour := now.Truncate(time.Hour)
	winStart := thisHour.Add(-23 * time.Hour)
	res, err := s.Ledger.Run(Query{Account: id.Account, From: winStart, To: thisHour.Add(time.Hour), GroupBy: []Dim{{Kind: DimHour}}, Filter: in.Filter})
	if err != nil {
		return nil, err
	}
	if len(res.Groups) == 0 {
		return nil, awsapi.Errorf("DataUnavailableException", "Insufficient amount of historical data to generate forecast: no usage in the last 24 hours.")
	}
	usage := *in.Metric == "USAGE_QUANTITY"
	value := func(a *Agg) decimal.Decimal {
		if usage {
			return UsageHours(a)
		}
		return a.CostDecimal()
	}
	// The rate is the window's total over the time since its first usage.
	first := time.Unix(res.Groups[0].raw[0], 0).UTC()
	elapsed := max(now.Sub(first), time.Minute)
	rate := value(&res.Total).Mul(decimal.NewFromInt(3600)).Div(decimal.NewFromInt(int64(elapsed / time.Second)))
	// The interval spans the cheapest and dearest complete hour (hours
	// without usage count as zero).
	lo, hi := rate, rate
	byHour := map[int64]decimal.Decimal{}
	for _, g := range res.Groups {
		byHour[g.raw[0]] = value(&g.Agg)
	}
	for h := first; h.Before(thisHour); h = h.Add(time.Hour) {
		v := byHour[h.Unix()]
		lo, hi = decimal.Min(lo, v), decimal.Max(hi, v)
	}
	out := &GetCostForecastOutput{ForecastResultsByTime: []ForecastResult{}}
	total := decimal.Zero
	for _, p := range periods(start, end, gran) {
		from := p[0]
		if from.Before(now) {
			from = now
		}
		if !p[1].After(from) {
			continue
		}
		h := decimal.NewFromInt(int64(p[1].Sub(from) / time.Second)).Div(decimal.NewFromInt(3600))
		mean := rate.Mul(h).Round(CostScale)
		total = total.Add(mean)
		out.ForecastResultsByTime = append(out.ForecastResultsByTime, ForecastResult{
			TimePeriod:                   formatPeriod(p[0], p[1], gran),
			MeanValue:                    mean.String(),
			PredictionIntervalLowerBound: lo.Mul(h).Round(CostScale).String(),
			PredictionIntervalUpperBound: hi.Mul(h).Round(CostScale).String(),
		})
	}
	unit := "USD"
	if usage {
		unit = "N/A"
	}
	out.Total = MetricValue{Amount: total.String(), Unit: unit}
	return out, nil
}
