package test

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shopspring/decimal"

	"github.com/gantry-dev/gantry/internal/billing"
	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// gantryBilling runs `gantry billing ARGS` with the env `gantry env` sets.
func gantryBilling(t *testing.T, s *testenv.Server, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(testenv.Binary(t), append([]string{"billing"}, args...)...)
	cmd.Env = s.Env()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String() + errb.String(), err
	}
	return out.String(), nil
}

func mustBilling(t *testing.T, s *testenv.Server, args ...string) string {
	t.Helper()
	out, err := gantryBilling(t, s, args...)
	if err != nil {
		t.Fatalf("gantry billing %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

type cliTimes struct {
	TaskArn              string `json:"taskArn"`
	Cpu, Memory          string
	LastStatus           string      `json:"lastStatus"`
	CapacityProviderName string      `json:"capacityProviderName"`
	PullStartedAt        json.Number `json:"pullStartedAt"`
	StartedAt            json.Number `json:"startedAt"`
	StoppedAt            json.Number `json:"stoppedAt"`
	EphemeralStorage     struct {
		SizeInGiB int64 `json:"sizeInGiB"`
	} `json:"ephemeralStorage"`
}

func describeTimes(t *testing.T, s *testenv.Server, arn string) cliTimes {
	t.Helper()
	var out struct{ Tasks []cliTimes }
	s.MustAWS(&out, "ecs", "describe-tasks", "--cluster", "bill", "--tasks", arn)
	if len(out.Tasks) != 1 {
		t.Fatalf("describe %s: %+v", arn, out)
	}
	return out.Tasks[0]
}

// cliTime reads the CLI's epoch-seconds timestamps exactly (no float).
func cliTime(t *testing.T, n json.Number) time.Time {
	t.Helper()
	d, err := decimal.NewFromString(string(n))
	if err != nil {
		t.Fatalf("time %q: %v", n, err)
	}
	return time.UnixMilli(d.Shift(3).Round(0).IntPart())
}

// expectedCost prices a stopped task from what describe-tasks shows, by
// Fargate's rules: pull start to STOPPED, up to the second, one-minute
// minimum, each clock hour's line rounded to 1e-10 USD.
func expectedCost(t *testing.T, task cliTimes) (decimal.Decimal, int64) {
	t.Helper()
	start := cliTime(t, task.PullStartedAt)
	stop := cliTime(t, task.StoppedAt)
	ms := stop.UnixMilli() - start.UnixMilli()
	billed := max((ms+999)/1000*1000, 60_000)
	spot := task.CapacityProviderName == "FARGATE_SPOT"
	price := func(ut string) decimal.Decimal {
		if spot {
			ut = "SpotUsage-" + ut
		}
		return decimal.RequireFromString(billing.DefaultPrices[ut])
	}
	cpu := decimal.RequireFromString(task.Cpu)
	mem := decimal.RequireFromString(task.Memory)
	eph := decimal.NewFromInt(max(task.EphemeralStorage.SizeInGiB-20, 0))
	total := decimal.Zero
	s := start.UnixMilli()
	for h := s / 3_600_000 * 3_600_000; h < s+billed; h += 3_600_000 {
		part := decimal.NewFromInt(min(s+billed, h+3_600_000) - max(s, h))
		total = total.Add(cpu.Mul(part).Mul(price("Fargate-vCPU-Hours:perCPU")).DivRound(decimal.NewFromInt(1024*3_600_000), 10))
		total = total.Add(mem.Mul(part).Mul(price("Fargate-GB-Hours")).DivRound(decimal.NewFromInt(1024*3_600_000), 10))
		if eph.IsPositive() {
			total = total.Add(eph.Mul(part).Mul(price("Fargate-EphemeralStorage-GB-Hours")).DivRound(decimal.NewFromInt(3_600_000), 10))
		}
	}
	return total, billed
}

type ceOut struct {
	ResultsByTime []struct {
		TimePeriod struct{ Start, End string }
		Total      map[string]struct{ Amount, Unit string }
		Groups     []struct {
			Keys    []string
			Metrics map[string]struct{ Amount, Unit string }
		}
		Estimated bool
	}
}

func (c ceOut) total(metric string) decimal.Decimal {
	sum := decimal.Zero
	for _, r := range c.ResultsByTime {
		if m, ok := r.Total[metric]; ok {
			sum = sum.Add(decimal.RequireFromString(m.Amount))
		}
		for _, g := range r.Groups {
			sum = sum.Add(decimal.RequireFromString(g.Metrics[metric].Amount))
		}
	}
	return sum
}

func (c ceOut) byKey(metric string) map[string]decimal.Decimal {
	out := map[string]decimal.Decimal{}
	for _, r := range c.ResultsByTime {
		for _, g := range r.Groups {
			k := strings.Join(g.Keys, "|")
			out[k] = out[k].Add(decimal.RequireFromString(g.Metrics[metric].Amount))
		}
	}
	return out
}

// TestBillingRealTasks runs real tasks (on-demand with extra ephemeral
// storage, Spot, and one that runs across a server restart) through the aws
// CLI, then checks that the usage billed is exactly what Fargate's rules
// give for their timestamps, and that `aws ce get-cost-and-usage`, boto3 and
// `gantry billing report` agree on it to the cent (in fact exactly).
func TestBillingRealTasks(t *testing.T) {
	s := testenv.Start(t)
	loadImage(t, s, testimage.Busybox(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "bill")
	registerJSON(t, s, `{"family":"batch","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"512","memory":"1024",
		"ephemeralStorage":{"sizeInGiB":30},
		"containerDefinitions":[{"name":"main","image":"gantry-test/busybox:latest","command":["sh","-c","sleep 2"]}]}`)
	registerJSON(t, s, `{"family":"daemon","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"main","image":"gantry-test/busybox:latest","stopTimeout":2,
		"command":["sh","-c","trap 'exit 0' TERM; while true; do sleep 1; done"]}]}`)
	net := awsvpc(defaultSubnet(t, s))

	batch := runTask(t, s, "--cluster", "bill", "--task-definition", "batch", "--network-configuration", net,
		"--launch-type", "FARGATE", "--tags", "key=team,value=red")
	spot := runTask(t, s, "--cluster", "bill", "--task-definition", "batch", "--network-configuration", net,
		"--capacity-provider-strategy", "capacityProvider=FARGATE_SPOT,weight=1", "--tags", "key=team,value=blue")
	daemon := runTask(t, s, "--cluster", "bill", "--task-definition", "daemon", "--network-configuration", net, "--group", "service:api")
	waitStatus(t, s, "bill", daemon.TaskArn, "RUNNING", 2*time.Minute)

	// A running task shows its cost so far (the one-minute minimum at
	// first), and it grows once past the minimum.
	var r1, r2 billing.ReportOutput
	json.Unmarshal([]byte(mustBilling(t, s, "report", "--group-by", "service", "--format", "json")), &r1)
	if !decimal.RequireFromString(r1.Total.Cost).IsPositive() {
		t.Fatalf("running tasks show no cost: %+v", r1)
	}

	// The daemon runs on across a restart of the server.
	s.Restart()
	time.Sleep(65 * time.Second) // beyond the one-minute minimum
	json.Unmarshal([]byte(mustBilling(t, s, "report", "--group-by", "service", "--format", "json")), &r2)
	if !decimal.RequireFromString(r2.Total.Cost).GreaterThan(decimal.RequireFromString(r1.Total.Cost)) {
		t.Errorf("accrued cost did not grow: %s then %s", r1.Total.Cost, r2.Total.Cost)
	}
	s.MustAWS(nil, "ecs", "stop-task", "--cluster", "bill", "--task", daemon.TaskArn)
	for _, arn := range []string{batch.TaskArn, spot.TaskArn, daemon.TaskArn} {
		waitStatus(t, s, "bill", arn, "STOPPED", 2*time.Minute)
	}

	want := decimal.Zero
	tasks := map[string]cliTimes{}
	for name, arn := range map[string]string{"batch": batch.TaskArn, "spot": spot.TaskArn, "daemon": daemon.TaskArn} {
		task := describeTimes(t, s, arn)
		tasks[name] = task
		c, billed := expectedCost(t, task)
		t.Logf("%s: billed %d ms, $%s", name, billed, c)
		want = want.Add(c)
	}
	if tasks["spot"].CapacityProviderName != "FARGATE_SPOT" {
		t.Fatalf("spot task: %+v", tasks["spot"])
	}

	now := time.Now().UTC()
	from, to := now.AddDate(0, 0, -1).Format("2006-01-02"), now.AddDate(0, 0, 2).Format("2006-01-02")

	// gantry billing report, three formats.
	var rep billing.ReportOutput
	if err := json.Unmarshal([]byte(mustBilling(t, s, "report", "--from", from, "--to", to, "--group-by", "family,tag:team", "--format", "json")), &rep); err != nil {
		t.Fatal(err)
	}
	if got := decimal.RequireFromString(rep.Total.Cost); !got.Equal(want) {
		t.Errorf("report total $%s, want $%s (from the tasks' timestamps)", got, want)
	}
	sum := decimal.Zero
	groups := map[string]bool{}
	for _, r := range rep.Rows {
		sum = sum.Add(decimal.RequireFromString(r.Cost))
		groups[strings.Join(r.Keys, "/")] = true
	}
	if !sum.Equal(want) || !groups["batch/red"] || !groups["batch/blue"] || !groups["daemon/"] {
		t.Errorf("report rows %+v (sum %s)", rep.Rows, sum)
	}
	csvOut := mustBilling(t, s, "report", "--from", from, "--to", to, "--group-by", "cluster", "--format", "csv")
	rows, err := csv.NewReader(strings.NewReader(csvOut)).ReadAll()
	if err != nil || len(rows) != 3 || rows[1][0] != "bill" || rows[2][0] != "TOTAL" || !decimal.RequireFromString(rows[2][4]).Equal(want) {
		t.Errorf("csv report: %v\n%s", err, csvOut)
	}
	table := mustBilling(t, s, "report", "--from", from, "--to", to, "--group-by", "day")
	if !strings.Contains(table, "TOTAL") || !strings.Contains(table, "$"+want.String()) {
		t.Errorf("table report:\n%s", table)
	}

	// Cost Explorer through the aws CLI.
	var ce ceOut
	s.MustAWS(&ce, "ce", "get-cost-and-usage", "--time-period", "Start="+from+",End="+to,
		"--granularity", "DAILY", "--metrics", "UnblendedCost", "UsageQuantity")
	if len(ce.ResultsByTime) != 3 {
		t.Fatalf("ResultsByTime: %+v", ce)
	}
	if got := ce.total("UnblendedCost"); !got.Equal(want) {
		t.Errorf("ce UnblendedCost $%s, want $%s", got, want)
	}
	if got, w := ce.total("UnblendedCost").Round(2), decimal.RequireFromString(rep.Total.Cost).Round(2); !got.Equal(w) {
		t.Errorf("to the cent: ce $%s, report $%s", got, w)
	}
	var monthly ceOut
	s.MustAWS(&monthly, "ce", "get-cost-and-usage", "--time-period", "Start="+from+",End="+to,
		"--granularity", "MONTHLY", "--metrics", "UnblendedCost", "--group-by", "Type=DIMENSION,Key=USAGE_TYPE")
	byType := monthly.byKey("UnblendedCost")
	for _, ut := range []string{"USE1-Fargate-vCPU-Hours:perCPU", "USE1-Fargate-GB-Hours", "USE1-Fargate-EphemeralStorage-GB-Hours",
		"USE1-SpotUsage-Fargate-vCPU-Hours:perCPU", "USE1-SpotUsage-Fargate-GB-Hours", "USE1-SpotUsage-Fargate-EphemeralStorage-GB-Hours"} {
		if !byType[ut].IsPositive() {
			t.Errorf("usage type %s missing: %v", ut, byType)
		}
	}
	if got := monthly.total("UnblendedCost"); !got.Equal(want) {
		t.Errorf("ce by usage type $%s, want $%s", got, want)
	}
	var byTag ceOut
	s.MustAWS(&byTag, "ce", "get-cost-and-usage", "--time-period", "Start="+from+",End="+to,
		"--granularity", "DAILY", "--metrics", "UnblendedCost", "--group-by", "Type=TAG,Key=team",
		"--filter", `{"Dimensions":{"Key":"SERVICE","Values":["Amazon Elastic Container Service"]}}`)
	tagged := byTag.byKey("UnblendedCost")
	red, _ := expectedCost(t, tasks["batch"])
	if !tagged["team$red"].Equal(red) || !tagged["team$"].IsPositive() {
		t.Errorf("ce by tag: %v (red want %s)", tagged, red)
	}
	var spotOnly ceOut
	s.MustAWS(&spotOnly, "ce", "get-cost-and-usage", "--time-period", "Start="+from+",End="+to,
		"--granularity", "DAILY", "--metrics", "UnblendedCost",
		"--filter", `{"Dimensions":{"Key":"USAGE_TYPE","Values":["SpotUsage"],"MatchOptions":["CONTAINS"]}}`)
	if got, w := spotOnly.total("UnblendedCost"), must(expectedCost(t, tasks["spot"])); !got.Equal(w) {
		t.Errorf("ce spot filter $%s, want $%s", got, w)
	}

	// boto3 agrees too.
	out, err := s.Python(`
import boto3
ce = boto3.client("ce")
r = ce.get_cost_and_usage(TimePeriod={"Start": "` + from + `", "End": "` + to + `"}, Granularity="HOURLY" if False else "DAILY", Metrics=["UnblendedCost"])
from decimal import Decimal
print(sum(Decimal(x["Total"]["UnblendedCost"]["Amount"]) for x in r["ResultsByTime"]))
`)
	if err != nil || !decimal.RequireFromString(strings.TrimSpace(out)).Equal(want) {
		t.Errorf("boto3: %v %q, want %s", err, out, want)
	}

	// Hourly results cover the hours asked for.
	hourStart := now.Truncate(time.Hour).Add(-3 * time.Hour)
	var hourly ceOut
	s.MustAWS(&hourly, "ce", "get-cost-and-usage", "--time-period",
		"Start="+hourStart.Format("2006-01-02T15:04:05Z")+",End="+hourStart.Add(5*time.Hour).Format("2006-01-02T15:04:05Z"),
		"--granularity", "HOURLY", "--metrics", "UnblendedCost")
	if len(hourly.ResultsByTime) != 5 || !hourly.total("UnblendedCost").Equal(want) {
		t.Errorf("hourly: %d periods, $%s", len(hourly.ResultsByTime), hourly.total("UnblendedCost"))
	}

	// A forecast from the recent trend.
	var fc struct {
		Total                 struct{ Amount, Unit string }
		ForecastResultsByTime []struct{ MeanValue string }
	}
	s.MustAWS(&fc, "ce", "get-cost-forecast", "--time-period", "Start="+now.Format("2006-01-02")+",End="+now.AddDate(0, 0, 2).Format("2006-01-02"),
		"--metric", "UNBLENDED_COST", "--granularity", "DAILY")
	if len(fc.ForecastResultsByTime) != 2 || !decimal.RequireFromString(fc.Total.Amount).IsPositive() || fc.Total.Unit != "USD" {
		t.Errorf("forecast: %+v", fc)
	}

	// Budgets: crossing the threshold and the limit raises events, shown
	// by `gantry billing budgets` and logged by the server.
	mustBilling(t, s, "budgets", "set", "--name", "bill-cap", "--cluster", "bill", "--limit", "0.0001", "--threshold", "50")
	mustBilling(t, s, "budgets", "set", "--name", "green", "--tag", "team=green", "--limit", "5")
	var bs struct{ Budgets []billing.BudgetStatus }
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Second) {
		json.Unmarshal([]byte(mustBilling(t, s, "budgets", "--format", "json")), &bs)
		if len(bs.Budgets) == 2 && len(bs.Budgets[0].Events) == 2 || time.Now().After(deadline) {
			break
		}
	}
	if len(bs.Budgets) != 2 || bs.Budgets[0].Name != "bill-cap" || len(bs.Budgets[0].Events) != 2 || len(bs.Budgets[1].Events) != 0 ||
		!decimal.RequireFromString(bs.Budgets[0].Spent).Equal(monthToDate(t, s, want)) {
		t.Errorf("budgets: %+v", bs)
	}
	if logb, _ := os.ReadFile(filepath.Join(s.DataDir, "server.log")); !strings.Contains(string(logb), "billing budget crossed") {
		t.Errorf("server log has no budget event")
	}
	table = mustBilling(t, s, "budgets")
	if !strings.Contains(table, "bill-cap") || !strings.Contains(table, "THRESHOLD crossed") {
		t.Errorf("budgets table:\n%s", table)
	}

	// A second restart changes nothing already billed.
	s.Restart()
	var again billing.ReportOutput
	json.Unmarshal([]byte(mustBilling(t, s, "report", "--from", from, "--to", to, "--format", "json")), &again)
	if !decimal.RequireFromString(again.Total.Cost).Equal(want) {
		t.Errorf("after restart: $%s, want $%s", again.Total.Cost, want)
	}
}

func must(d decimal.Decimal, _ int64) decimal.Decimal { return d }

// monthToDate is what a budget sees: this month's part of the usage (all of
// it, unless the test ran across a month boundary).
func monthToDate(t *testing.T, s *testenv.Server, all decimal.Decimal) decimal.Decimal {
	now := time.Now().UTC()
	var rep billing.ReportOutput
	json.Unmarshal([]byte(mustBilling(t, s, "report", "--from", now.Format("2006-01")+"-01", "--format", "json")), &rep)
	return decimal.RequireFromString(rep.Total.Cost)
}

// TestBillingErrors: bad input gets AWS-style errors naming the field.
func TestBillingErrors(t *testing.T) {
	s := testenv.Start(t)
	period := "Start=2026-01-01,End=2026-01-03"
	cases := []struct {
		args []string
		code string
		want string
	}{
		{[]string{"ce", "get-cost-and-usage", "--time-period", "Start=2026-01-05,End=2026-01-01", "--granularity", "DAILY", "--metrics", "UnblendedCost"}, "ValidationException", "TimePeriod"},
		{[]string{"ce", "get-cost-and-usage", "--time-period", "Start=yesterday,End=2026-01-01", "--granularity", "DAILY", "--metrics", "UnblendedCost"}, "ValidationException", "TimePeriod.Start"},
		{[]string{"ce", "get-cost-and-usage", "--time-period", period, "--granularity", "WEEKLY", "--metrics", "UnblendedCost"}, "ValidationException", "Granularity"},
		{[]string{"ce", "get-cost-and-usage", "--time-period", period, "--granularity", "DAILY", "--metrics", "Bogus"}, "ValidationException", "Metrics"},
		{[]string{"ce", "get-cost-and-usage", "--time-period", period, "--granularity", "DAILY", "--metrics", "UnblendedCost", "--group-by", "Type=DIMENSION,Key=INSTANCE_TYPE"}, "ValidationException", "GroupBy[0].Key"},
		{[]string{"ce", "get-cost-and-usage", "--time-period", period, "--granularity", "DAILY", "--metrics", "UnblendedCost",
			"--filter", `{"Dimensions":{"Key":"SERVICE","Values":["x"]},"Tags":{"Key":"a","Values":["b"]}}`}, "ValidationException", "Filter"},
		{[]string{"ce", "get-cost-and-usage", "--time-period", period, "--granularity", "DAILY", "--metrics", "UnblendedCost",
			"--filter", `{"And":[{"Tags":{"Key":"a","Values":["b"]}}]}`}, "ValidationException", "Filter.And"},
		{[]string{"ce", "get-cost-forecast", "--time-period", "Start=2020-01-01,End=2020-02-01", "--metric", "UNBLENDED_COST", "--granularity", "MONTHLY"}, "ValidationException", "TimePeriod.Start"},
		{[]string{"ce", "get-cost-forecast", "--time-period", "Start=" + time.Now().UTC().Format("2006-01-02") + ",End=2099-01-01", "--metric", "UNBLENDED_COST", "--granularity", "MONTHLY"}, "DataUnavailableException", "forecast"},
	}
	for _, c := range cases {
		code, msg := s.AWSError(c.args...)
		if code != c.code || !strings.Contains(msg, c.want) {
			t.Errorf("aws %s: %s %q, want %s naming %s", strings.Join(c.args, " "), code, msg, c.code, c.want)
		}
	}
	// A raw body of the wrong shape: SerializationException, not a 500.
	out, err := s.Python(`
import boto3, botocore
ce = boto3.client("ce")
try:
    ce.get_cost_and_usage(TimePeriod={"Start": "2026-01-01", "End": "2026-01-02"}, Granularity="DAILY", Metrics=["UnblendedCost"], GroupBy=[{"Type": "TAG"}])
except botocore.exceptions.ClientError as e:
    print(e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Message"])
`)
	if err != nil || !strings.HasPrefix(out, "ValidationException 400") || !strings.Contains(out, "GroupBy[0]") {
		t.Errorf("boto3 group without key: %v %s", err, out)
	}
	for _, c := range [][]string{
		{"report", "--group-by", "colour"},
		{"report", "--from", "tomorrow"},
		{"report", "--format", "xml"},
		{"budgets", "set", "--name", "x", "--limit", "-3"},
		{"budgets", "set", "--name", "x", "--limit", "3", "--tag", "novalue"},
		{"budgets", "delete", "--name", "nope"},
	} {
		out, err := gantryBilling(t, s, c...)
		if err == nil || strings.Contains(out, "panic") || strings.Contains(out, "ServerException") {
			t.Errorf("gantry billing %v: %v\n%s", c, err, out)
		}
	}
	if out, _ := gantryBilling(t, s, "budgets", "set", "--name", "x", "--limit", "-3"); !strings.Contains(out, "ValidationException: Limit") {
		t.Errorf("budget error names no field: %s", out)
	}
}
