package test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
)

type cwDatapoint struct {
	Timestamp   any      `json:"Timestamp"` // epoch seconds (JSON protocol) or ISO 8601
	Average     *float64 `json:"Average"`
	Maximum     *float64 `json:"Maximum"`
	Minimum     *float64 `json:"Minimum"`
	Sum         *float64 `json:"Sum"`
	SampleCount *float64 `json:"SampleCount"`
	Unit        string   `json:"Unit"`
}

type cwStats struct {
	Label      string        `json:"Label"`
	Datapoints []cwDatapoint `json:"Datapoints"`
}

type cwMetrics struct {
	Metrics []struct {
		Namespace  string `json:"Namespace"`
		MetricName string `json:"MetricName"`
		Dimensions []struct {
			Name  string `json:"Name"`
			Value string `json:"Value"`
		} `json:"Dimensions"`
	} `json:"Metrics"`
}

// cwTime reads a timestamp as the CLI prints it: the wire's epoch seconds
// (JSON protocol, cli_timestamp_format none) or ISO 8601.
func cwTime(t *testing.T, v any) time.Time {
	t.Helper()
	switch x := v.(type) {
	case float64:
		return time.UnixMilli(int64(x * 1000)).UTC()
	case string:
		if p, err := time.Parse(time.RFC3339, x); err == nil {
			return p.UTC()
		}
	}
	t.Fatalf("timestamp %v", v)
	return time.Time{}
}

func dumpJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// metricStats runs `aws cloudwatch get-metric-statistics` over the last
// `window` with the given dimensions (Name=Value).
func metricStats(t *testing.T, s *testenv.Server, ns, name string, period int, window time.Duration, dims ...string) cwStats {
	t.Helper()
	end := time.Now().UTC().Add(time.Minute)
	start := end.Add(-window)
	args := []string{"cloudwatch", "get-metric-statistics", "--namespace", ns, "--metric-name", name,
		"--start-time", start.Format(time.RFC3339), "--end-time", end.Format(time.RFC3339), "--period", fmt.Sprint(period),
		"--statistics", "Average", "Maximum", "Minimum", "Sum", "SampleCount"}
	if len(dims) > 0 {
		args = append(args, "--dimensions")
		for _, d := range dims {
			k, v, _ := strings.Cut(d, "=")
			args = append(args, "Name="+k+",Value="+v)
		}
	}
	var out cwStats
	s.MustAWS(&out, args...)
	return out
}

// TestCloudWatchAPI: custom metrics in and out through the CLI and boto3
// (statistics per period, dimension matching, units, ListMetrics filters,
// GetMetricData), and the errors bad requests get. No tasks needed.
func TestCloudWatchAPI(t *testing.T) {
	s := testenv.Start(t)
	now := time.Now().UTC().Truncate(time.Minute).Add(-10 * time.Minute)
	ts := func(d time.Duration) string { return now.Add(d).Format(time.RFC3339) }
	// Minute 0: values 10 and 30 (+ a statistic set), minute 1: 50.
	data := []map[string]any{
		{"MetricName": "Latency", "Dimensions": []map[string]string{{"Name": "Api", "Value": "get"}}, "Value": 10, "Unit": "Milliseconds", "Timestamp": ts(5 * time.Second)},
		{"MetricName": "Latency", "Dimensions": []map[string]string{{"Name": "Api", "Value": "get"}}, "Value": 30, "Unit": "Milliseconds", "Timestamp": ts(20 * time.Second)},
		{"MetricName": "Latency", "Dimensions": []map[string]string{{"Name": "Api", "Value": "get"}}, "StatisticValues": map[string]float64{"SampleCount": 2, "Sum": 40, "Minimum": 5, "Maximum": 35}, "Unit": "Milliseconds", "Timestamp": ts(40 * time.Second)},
		{"MetricName": "Latency", "Dimensions": []map[string]string{{"Name": "Api", "Value": "get"}}, "Value": 50, "Unit": "Milliseconds", "Timestamp": ts(70 * time.Second)},
		{"MetricName": "Latency", "Dimensions": []map[string]string{{"Name": "Api", "Value": "put"}}, "Value": 99, "Unit": "Milliseconds", "Timestamp": ts(5 * time.Second)},
		{"MetricName": "Requests", "Value": 1, "Unit": "Count", "Timestamp": ts(5 * time.Second)},
	}
	b, _ := json.Marshal(data)
	s.MustAWS(nil, "cloudwatch", "put-metric-data", "--namespace", "App", "--metric-data", string(b))

	var st cwStats
	s.MustAWS(&st, "cloudwatch", "get-metric-statistics", "--namespace", "App", "--metric-name", "Latency",
		"--dimensions", "Name=Api,Value=get", "--start-time", ts(0), "--end-time", ts(5*time.Minute), "--period", "60",
		"--statistics", "Average", "Maximum", "Minimum", "Sum", "SampleCount")
	if st.Label != "Latency" || len(st.Datapoints) != 2 {
		t.Fatalf("get-metric-statistics: %+v", st)
	}
	byTime := map[string]cwDatapoint{}
	for _, d := range st.Datapoints {
		byTime[cwTime(t, d.Timestamp).Format(time.RFC3339)] = d
	}
	d0, d1 := byTime[ts(0)], byTime[ts(time.Minute)]
	if d0.SampleCount == nil || *d0.SampleCount != 4 || *d0.Sum != 80 || *d0.Average != 20 || *d0.Minimum != 5 || *d0.Maximum != 35 || d0.Unit != "Milliseconds" {
		t.Errorf("minute 0: %+v (all %+v)", d0, st.Datapoints)
	}
	if d1.SampleCount == nil || *d1.SampleCount != 1 || *d1.Average != 50 {
		t.Errorf("minute 1: %+v", d1)
	}
	// A 120 s period folds both minutes; the wrong unit or dimension set finds nothing.
	st = cwStats{}
	s.MustAWS(&st, "cloudwatch", "get-metric-statistics", "--namespace", "App", "--metric-name", "Latency",
		"--dimensions", "Name=Api,Value=get", "--start-time", ts(0), "--end-time", ts(2*time.Minute), "--period", "120", "--statistics", "Maximum", "SampleCount")
	if len(st.Datapoints) != 1 || *st.Datapoints[0].Maximum != 50 || *st.Datapoints[0].SampleCount != 5 || st.Datapoints[0].Average != nil {
		t.Errorf("120 s period: %s", dumpJSON(st.Datapoints))
	}
	for _, extra := range [][]string{{"--unit", "Seconds"}, {"--dimensions", "Name=Api,Value=post"}, {}} {
		args := append([]string{"cloudwatch", "get-metric-statistics", "--namespace", "App", "--metric-name", "Latency",
			"--start-time", ts(0), "--end-time", ts(5 * time.Minute), "--period", "60", "--statistics", "Average"}, extra...)
		if len(extra) > 0 && extra[0] == "--unit" {
			args = append(args, "--dimensions", "Name=Api,Value=get")
		}
		st = cwStats{}
		s.MustAWS(&st, args...)
		if len(st.Datapoints) != 0 {
			t.Errorf("%v: want no datapoints, got %+v", extra, st.Datapoints)
		}
	}

	var lm cwMetrics
	s.MustAWS(&lm, "cloudwatch", "list-metrics", "--namespace", "App")
	if len(lm.Metrics) != 3 {
		t.Errorf("list-metrics App: %+v", lm)
	}
	s.MustAWS(&lm, "cloudwatch", "list-metrics", "--namespace", "App", "--metric-name", "Latency", "--dimensions", "Name=Api,Value=put")
	if len(lm.Metrics) != 1 || lm.Metrics[0].Dimensions[0].Value != "put" {
		t.Errorf("list-metrics Api=put: %+v", lm)
	}
	s.MustAWS(&lm, "cloudwatch", "list-metrics", "--dimensions", "Name=Api")
	if len(lm.Metrics) != 2 {
		t.Errorf("list-metrics Api: %+v", lm)
	}

	// boto3: GetMetricData (newest first by default, ReturnData=false left out).
	out, err := s.Python(fmt.Sprintf(`
import boto3, datetime, json
cw = boto3.client("cloudwatch")
start = datetime.datetime.fromisoformat(%q)
q = lambda i, stat, ret=True: {"Id": i, "ReturnData": ret, "MetricStat": {"Metric": {"Namespace": "App", "MetricName": "Latency",
    "Dimensions": [{"Name": "Api", "Value": "get"}]}, "Period": 60, "Stat": stat}}
r = cw.get_metric_data(MetricDataQueries=[q("avg", "Average"), q("mx", "Maximum"), q("hidden", "Sum", False)],
    StartTime=start, EndTime=start + datetime.timedelta(minutes=5))
print(json.dumps([{"id": m["Id"], "status": m["StatusCode"], "values": m["Values"], "ts": [t.isoformat() for t in m["Timestamps"]]} for m in r["MetricDataResults"]]))
`, now.Format(time.RFC3339)))
	if err != nil {
		t.Fatalf("boto3 get_metric_data: %v\n%s", err, out)
	}
	var gmd []struct {
		ID     string    `json:"id"`
		Status string    `json:"status"`
		Values []float64 `json:"values"`
		TS     []string  `json:"ts"`
	}
	if err := json.Unmarshal([]byte(out), &gmd); err != nil {
		t.Fatalf("boto3 output %q: %v", out, err)
	}
	if len(gmd) != 2 || gmd[0].ID != "avg" || gmd[0].Status != "Complete" || fmt.Sprint(gmd[0].Values) != "[50 20]" ||
		gmd[1].ID != "mx" || fmt.Sprint(gmd[1].Values) != "[50 35]" || len(gmd[0].TS) != 2 || gmd[0].TS[0] <= gmd[0].TS[1] {
		t.Errorf("get_metric_data: %+v", gmd)
	}

	// Errors carry CloudWatch's codes.
	base := []string{"cloudwatch", "get-metric-statistics", "--namespace", "App", "--metric-name", "Latency", "--start-time", ts(0), "--end-time", ts(time.Minute)}
	for _, c := range []struct {
		args []string
		code string
	}{
		{append(append([]string{}, base...), "--period", "60"), "InvalidParameterCombination"},                     // no statistics
		{append(append([]string{}, base...), "--period", "7", "--statistics", "Average"), "InvalidParameterValue"}, // bad period
		{append(append([]string{}, base...), "--period", "60", "--statistics", "Median"), "InvalidParameterValue"}, // bad statistic
		{append(append([]string{}, base[:6]...), "--start-time", ts(time.Hour), "--end-time", ts(0), "--period", "60", "--statistics", "Sum"), "InvalidParameterValue"},
		{append(append([]string{}, base[:6]...), "--start-time", ts(-48*time.Hour), "--end-time", ts(0), "--period", "60", "--statistics", "Sum"), "InvalidParameterCombination"}, // > 1440 points
		{[]string{"cloudwatch", "put-metric-data", "--namespace", "AWS/ECS", "--metric-name", "X", "--value", "1"}, "InvalidParameterValue"},
		{[]string{"cloudwatch", "put-metric-data", "--namespace", "App", "--metric-name", "X", "--value", "1", "--unit", "Parsecs"}, "InvalidParameterValue"},
	} {
		if code, msg := s.AWSError(c.args...); code != c.code {
			t.Errorf("aws %s: code %q want %q (%s)", strings.Join(c.args, " "), code, c.code, msg)
		}
	}
	out, err = s.Python(`
import boto3, datetime
cw = boto3.client("cloudwatch")
t = datetime.datetime.now(datetime.timezone.utc)
try:
    cw.get_metric_data(MetricDataQueries=[{"Id": "Bad", "MetricStat": {"Metric": {"Namespace": "App", "MetricName": "Latency"}, "Period": 60, "Stat": "Sum"}}], StartTime=t - datetime.timedelta(hours=1), EndTime=t)
except cw.exceptions.ClientError as e:
    print(e.response["Error"]["Code"])
`)
	if strings.TrimSpace(out) != "InvalidParameterValue" || err != nil {
		t.Errorf("get_metric_data with Id Bad: %v %q", err, out)
	}

	// Older clients speak the Query protocol (form in, XML out): boto3 with
	// the same model switched to "query", as botocore before 1.3x sent it.
	out, err = s.Python(fmt.Sprintf(`
import boto3, botocore, botocore.session, datetime, gzip, json, os, tempfile
src = os.path.join(os.path.dirname(botocore.__file__), "data", "cloudwatch", "2010-08-01", "service-2.json.gz")
m = json.load(gzip.open(src))
m["metadata"]["protocol"] = "query"
m["metadata"]["protocols"] = ["query"]
d = tempfile.mkdtemp()
os.makedirs(os.path.join(d, "cloudwatch", "2010-08-01"))
json.dump(m, open(os.path.join(d, "cloudwatch", "2010-08-01", "service-2.json"), "w"))
bs = botocore.session.get_session()
bs.get_component("data_loader").search_paths.insert(0, d)
cw = boto3.Session(botocore_session=bs).client("cloudwatch")
sent = []
cw.meta.events.register("before-send", lambda request, **kw: sent.append(request.headers.get("Content-Type")))
start = datetime.datetime.fromisoformat(%q)
cw.put_metric_data(Namespace="Old", MetricData=[{"MetricName": "M", "Dimensions": [{"Name": "D", "Value": "x"}], "Value": 7, "Unit": "Count", "Timestamp": start + datetime.timedelta(seconds=10)}])
st = cw.get_metric_statistics(Namespace="Old", MetricName="M", Dimensions=[{"Name": "D", "Value": "x"}], StartTime=start, EndTime=start + datetime.timedelta(minutes=5), Period=60, Statistics=["Sum", "SampleCount"])
lm = cw.list_metrics(Namespace="Old")
md = cw.get_metric_data(MetricDataQueries=[{"Id": "q", "MetricStat": {"Metric": {"Namespace": "Old", "MetricName": "M", "Dimensions": [{"Name": "D", "Value": "x"}]}, "Period": 60, "Stat": "Maximum"}}], StartTime=start, EndTime=start + datetime.timedelta(minutes=5))
try:
    cw.get_metric_statistics(Namespace="Old", MetricName="M", StartTime=start, EndTime=start + datetime.timedelta(minutes=5), Period=7, Statistics=["Sum"])
    code = "none"
except cw.exceptions.ClientError as e:
    code = e.response["Error"]["Code"]
dp = st["Datapoints"][0]
print(json.dumps({"ct": sorted(set(c.decode() if isinstance(c, bytes) else c for c in sent)), "sum": dp["Sum"], "n": dp["SampleCount"], "unit": dp["Unit"], "ts": dp["Timestamp"].isoformat(),
    "metrics": [[x["MetricName"], x["Dimensions"]] for x in lm["Metrics"]], "md": md["MetricDataResults"][0]["Values"], "err": code}))
`, now.Format(time.RFC3339)))
	if err != nil {
		t.Fatalf("boto3 over Query: %v\n%s", err, out)
	}
	want := fmt.Sprintf(`{"ct": ["application/x-www-form-urlencoded; charset=utf-8"], "sum": 7.0, "n": 1.0, "unit": "Count", "ts": %q, "metrics": [["M", [{"Name": "D", "Value": "x"}]]], "md": [7.0], "err": "InvalidParameterValue"}`,
		now.Format("2006-01-02T15:04:05+00:00"))
	if strings.TrimSpace(out) != want {
		t.Errorf("boto3 over Query:\n got %s\nwant %s", out, want)
	}
}
