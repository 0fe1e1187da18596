package billing

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/shopspring/decimal"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/state"
)

// GantryTargetPrefix is Gantry's own billing API (JSON 1.1, SigV4-signed like
// every call), which `gantry billing` uses.
const GantryTargetPrefix = "GantryBilling"

// GantryAPI is the `gantry billing` service.
func (s *Service) GantryAPI() *awsapi.JSONService {
	return &awsapi.JSONService{TargetPrefix: GantryTargetPrefix, Log: s.Log, Ops: map[string]awsapi.Handler{
		"GetReport":       awsapi.Op(s.getReport),
		"PutBudget":       awsapi.Op(s.putBudget),
		"DeleteBudget":    awsapi.Op(s.deleteBudget),
		"DescribeBudgets": awsapi.Op(s.describeBudgets),
	}}
}

// ReportInput asks for usage in [From, To) grouped by GroupBy.
type ReportInput struct {
	From    string   `json:"From"` // RFC 3339, yyyy-mm-dd or yyyy-mm-ddThh
	To      string   `json:"To"`
	GroupBy []string `json:"GroupBy"`
}

// ReportRow is one group: usage in unit-hours and its cost in USD.
type ReportRow struct {
	Keys           []string `json:"keys"`
	VCPUHours      string   `json:"vcpuHours"`
	GBHours        string   `json:"gbHours"`
	StorageGBHours string   `json:"ephemeralStorageGbHours"`
	Cost           string   `json:"cost"`
}

type ReportOutput struct {
	From     string      `json:"from"`
	To       string      `json:"to"`
	GroupBy  []string    `json:"groupBy"`
	Currency string      `json:"currency"`
	Rows     []ReportRow `json:"rows"`
	Total    ReportRow   `json:"total"`
}

// ParseTime reads a report bound: RFC 3339, yyyy-mm-dd, yyyy-mm-ddThh or
// yyyy-mm-ddThh:mm (UTC unless a zone is given).
func ParseTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02", "2006-01-02T15", "2006-01-02T15:04", "2006-01-02T15:04:05"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time (use 2026-01-31, 2026-01-31T13 or RFC 3339)", s)
}

func row(keys []string, a *Agg) ReportRow {
	return ReportRow{Keys: keys, VCPUHours: a.Hours(0).String(), GBHours: a.Hours(1).String(), StorageGBHours: a.Hours(2).String(), Cost: a.CostDecimal().String()}
}

func (s *Service) getReport(ctx context.Context, in *ReportInput) (*ReportOutput, error) {
	now := s.now().UTC()
	from := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	to := now.Truncate(time.Hour).Add(time.Hour)
	var err error
	if in.From != "" {
		if from, err = ParseTime(in.From); err != nil {
			return nil, validation("From: %v", err)
		}
	}
	if in.To != "" {
		if to, err = ParseTime(in.To); err != nil {
			return nil, validation("To: %v", err)
		}
	}
	if !from.Before(to) {
		return nil, validation("From must be before To.")
	}
	if len(in.GroupBy) > 4 {
		return nil, validation("GroupBy: at most 4 levels.")
	}
	var dims []Dim
	for i, g := range in.GroupBy {
		d, err := ParseDim(g)
		if err != nil {
			return nil, validation("GroupBy[%d]: %v", i, err)
		}
		dims = append(dims, d)
	}
	if err := s.fresh(ctx); err != nil {
		return nil, err
	}
	id := awsapi.IdentityFrom(ctx)
	res, err := s.Ledger.Run(Query{Account: id.Account, From: from, To: to, GroupBy: dims})
	if err != nil {
		return nil, err
	}
	out := &ReportOutput{From: from.Format(time.RFC3339), To: to.Format(time.RFC3339), GroupBy: in.GroupBy, Currency: "USD", Rows: []ReportRow{}}
	if out.GroupBy == nil {
		out.GroupBy = []string{}
	}
	for _, g := range res.Groups {
		out.Rows = append(out.Rows, row(g.Keys, &g.Agg))
	}
	out.Total = row([]string{"TOTAL"}, &res.Total)
	return out, nil
}

// Budget is a monthly spending limit for a cluster, a tag or the account.
// Crossing Threshold percent of Limit, and then the Limit itself, raises an
// event once per calendar month.
type Budget struct {
	Name      string        `json:"name"`
	Account   string        `json:"account"`
	Region    string        `json:"region"`
	Cluster   string        `json:"cluster,omitempty"`
	TagKey    string        `json:"tagKey,omitempty"`
	TagValue  string        `json:"tagValue,omitempty"`
	Limit     string        `json:"limit"`     // USD per calendar month (UTC)
	Threshold string        `json:"threshold"` // percent of Limit
	Events    []BudgetEvent `json:"events,omitempty"`
}

// BudgetEvent records a crossing.
type BudgetEvent struct {
	Month   string `json:"month"` // 2026-01
	Kind    string `json:"kind"`  // THRESHOLD or LIMIT
	Percent string `json:"percent"`
	Spent   string `json:"spent"`
	At      string `json:"at"`
}

type PutBudgetInput struct {
	Name      string `json:"Name"`
	Cluster   string `json:"Cluster"`
	Tag       string `json:"Tag"` // KEY=VALUE
	Limit     string `json:"Limit"`
	Threshold string `json:"Threshold"`
}

type BudgetStatus struct {
	Budget
	Month   string `json:"month"`
	Spent   string `json:"spent"`
	Percent string `json:"percent"`
}

type BudgetsOutput struct {
	Budgets []BudgetStatus `json:"budgets"`
}

var budgetName = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,100}$`)

func budgetKey(account, region, name string) string { return account + "/" + region + "/" + name }

func (s *Service) putBudget(ctx context.Context, in *PutBudgetInput) (*BudgetStatus, error) {
	if !budgetName.MatchString(in.Name) {
		return nil, validation("Name: 1 to 100 letters, digits, '_', '.', ':' or '-' are required.")
	}
	limit, err := decimal.NewFromString(in.Limit)
	if err != nil || !limit.IsPositive() {
		return nil, validation("Limit: %q is not a positive amount of USD.", in.Limit)
	}
	if in.Threshold == "" {
		in.Threshold = "80"
	}
	th, err := decimal.NewFromString(in.Threshold)
	if err != nil || !th.IsPositive() || th.GreaterThan(decimal.NewFromInt(1000)) {
		return nil, validation("Threshold: %q is not a percentage between 0 and 1000.", in.Threshold)
	}
	if in.Cluster != "" && in.Tag != "" {
		return nil, validation("Cluster and Tag: a budget covers a cluster or a tag, not both.")
	}
	id := awsapi.IdentityFrom(ctx)
	b := Budget{Name: in.Name, Account: id.Account, Region: id.Region, Cluster: in.Cluster, Limit: limit.String(), Threshold: th.String()}
	if in.Tag != "" {
		k, v, ok := strings.Cut(in.Tag, "=")
		if !ok || k == "" {
			return nil, validation("Tag: %q is not KEY=VALUE.", in.Tag)
		}
		b.TagKey, b.TagValue = k, v
	}
	err = s.Store.Update(ctx, func(tx state.Tx) error {
		var old Budget
		found, err := tx.Get(KindBudget, budgetKey(b.Account, b.Region, b.Name), &old)
		if err != nil {
			return err
		}
		if found && old.Cluster == b.Cluster && old.TagKey == b.TagKey && old.TagValue == b.TagValue && old.Limit == b.Limit && old.Threshold == b.Threshold {
			b.Events = old.Events
		}
		return tx.Put(KindBudget, budgetKey(b.Account, b.Region, b.Name), &b)
	})
	if err != nil {
		return nil, err
	}
	if err := s.fresh(ctx); err != nil {
		return nil, err
	}
	st := s.status(b, s.now())
	return &st, nil
}

type DeleteBudgetInput struct {
	Name string `json:"Name"`
}

func (s *Service) deleteBudget(ctx context.Context, in *DeleteBudgetInput) (*struct{}, error) {
	id := awsapi.IdentityFrom(ctx)
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		found, err := tx.Delete(KindBudget, budgetKey(id.Account, id.Region, in.Name))
		if err == nil && !found {
			return awsapi.Errorf("NotFoundException", "Name: no budget named %q.", in.Name)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &struct{}{}, nil
}

func (s *Service) describeBudgets(ctx context.Context, _ *struct{}) (*BudgetsOutput, error) {
	if err := s.fresh(ctx); err != nil {
		return nil, err
	}
	id := awsapi.IdentityFrom(ctx)
	var bs []Budget
	err := s.Store.View(ctx, func(tx state.Tx) error {
		var err error
		bs, err = state.List[Budget](tx, KindBudget, id.Account+"/"+id.Region+"/")
		return err
	})
	if err != nil {
		return nil, err
	}
	out := &BudgetsOutput{Budgets: []BudgetStatus{}}
	now := s.now()
	for _, b := range bs {
		out.Budgets = append(out.Budgets, s.status(b, now))
	}
	return out, nil
}

// status is a budget's month-to-date spend.
func (s *Service) status(b Budget, now time.Time) BudgetStatus {
	now = now.UTC()
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	res, err := s.Ledger.Run(Query{Account: b.Account, From: month, To: month.AddDate(0, 1, 0), Cluster: b.Cluster, TagKey: b.TagKey, TagVal: b.TagValue})
	spent := decimal.Zero
	if err == nil {
		spent = res.Total.CostDecimal()
	}
	limit := mustDecimal(b.Limit)
	pct := decimal.Zero
	if limit.IsPositive() {
		pct = spent.Mul(decimal.NewFromInt(100)).DivRound(limit, 2)
	}
	return BudgetStatus{Budget: b, Month: month.Format("2006-01"), Spent: spent.String(), Percent: pct.String()}
}

// CheckBudgets raises an event for each budget whose month-to-date spend
// crossed its threshold or its limit since the last check: once per month
// each, logged and stored with the budget.
func (s *Service) CheckBudgets(ctx context.Context, now time.Time) {
	var bs []Budget
	if err := s.Store.View(ctx, func(tx state.Tx) error {
		var err error
		bs, err = state.List[Budget](tx, KindBudget, "")
		return err
	}); err != nil {
		return
	}
	for _, b := range bs {
		st := s.status(b, now)
		pct := mustDecimal(st.Percent)
		var raise []BudgetEvent
		for _, c := range []struct{ kind, at string }{{"THRESHOLD", b.Threshold}, {"LIMIT", "100"}} {
			if pct.LessThan(mustDecimal(c.at)) || hasEvent(b, st.Month, c.kind) {
				continue
			}
			if c.kind == "LIMIT" && mustDecimal(b.Threshold).Equal(decimal.NewFromInt(100)) {
				continue // the threshold event already says it
			}
			raise = append(raise, BudgetEvent{Month: st.Month, Kind: c.kind, Percent: st.Percent, Spent: st.Spent, At: now.UTC().Format(time.RFC3339)})
		}
		if len(raise) == 0 {
			continue
		}
		err := s.Store.Update(ctx, func(tx state.Tx) error {
			var cur Budget
			key := budgetKey(b.Account, b.Region, b.Name)
			found, err := tx.Get(KindBudget, key, &cur)
			if err != nil || !found {
				return errors.Join(err, errNoBudget)
			}
			for _, e := range raise {
				if !hasEvent(cur, e.Month, e.Kind) {
					cur.Events = append(cur.Events, e)
				}
			}
			return tx.Put(KindBudget, key, &cur)
		})
		if err != nil {
			continue
		}
		for _, e := range raise {
			if s.Log != nil {
				s.Log.Warn("billing budget crossed", "budget", b.Name, "kind", e.Kind, "month", e.Month,
					"spent", e.Spent, "limit", b.Limit, "percent", e.Percent, "threshold", b.Threshold,
					"cluster", b.Cluster, "tag", tagString(b))
			}
		}
	}
}

var errNoBudget = errors.New("budget deleted")

func tagString(b Budget) string {
	if b.TagKey == "" {
		return ""
	}
	return b.TagKey + "=" + b.TagValue
}

func hasEvent(b Budget, month, kind string) bool {
	for _, e := range b.Events {
		if e.Month == month && e.Kind == kind {
			return true
		}
	}
	return false
}
