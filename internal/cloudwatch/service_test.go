package cloudwatch

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/gantry-dev/gantry/internal/awsapi"
)

// TestBadInput: odd but well-formed JSON never panics or answers a server
// fault; it gets a client error or an empty answer.
func TestBadInput(t *testing.T) {
	st, err := Open(filepath.Join(t.TempDir(), "metrics.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ops := (&Service{Store: st}).JSON().Ops
	ctx := awsapi.WithIdentity(context.Background(), &awsapi.Identity{Account: "1", Region: "r"})
	for _, c := range []struct{ op, body string }{
		{"GetMetricStatistics", `{}`},
		{"GetMetricStatistics", `{"Namespace":"A","MetricName":"M","StartTime":0,"EndTime":1e15,"Period":2147483640,"Statistics":["Sum"]}`},
		{"GetMetricStatistics", `{"Namespace":"A","MetricName":"M","StartTime":-1e15,"EndTime":1e15,"Period":60,"Statistics":["Sum"]}`},
		{"GetMetricStatistics", `{"Namespace":"A","MetricName":"M","StartTime":0,"EndTime":60,"Period":60,"Statistics":["Sum"],"Dimensions":[null]}`},
		{"GetMetricStatistics", `{"Namespace":"A","MetricName":"M","StartTime":0,"EndTime":60,"Period":-60,"Statistics":["Sum"]}`},
		{"GetMetricData", `{"MetricDataQueries":[null],"StartTime":0,"EndTime":60}`},
		{"GetMetricData", `{"MetricDataQueries":[{"Id":"a","MetricStat":{"Metric":null,"Period":60,"Stat":"Sum"}}],"StartTime":0,"EndTime":60}`},
		{"GetMetricData", `{"MetricDataQueries":[{"Id":"a","MetricStat":{"Metric":{"Namespace":"A","MetricName":"M"},"Period":60,"Stat":"Sum"}}],"StartTime":0,"EndTime":60,"MaxDatapoints":-5}`},
		{"ListMetrics", `{"Dimensions":[null]}`},
		{"ListMetrics", `{"NextToken":"-3"}`},
		{"PutMetricData", `{"Namespace":"A","MetricData":[null]}`},
		{"PutMetricData", `{"Namespace":"A","MetricData":[{"MetricName":"M","StatisticValues":{"SampleCount":0,"Sum":1,"Minimum":1,"Maximum":1}}]}`},
		{"PutMetricData", `{"Namespace":"A","MetricData":[{"MetricName":"M","Values":[1,2],"Counts":[0,0]}]}`},
		{"PutMetricData", `{"Namespace":"A","MetricData":[{"MetricName":"M","Value":1e308,"Timestamp":1e300}]}`},
	} {
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("%s %s: panic %v", c.op, c.body, p)
				}
			}()
			_, err := ops[c.op](ctx, []byte(c.body))
			if err != nil && awsapi.AsError(err).Status >= 500 {
				t.Errorf("%s %s: server fault %v", c.op, c.body, err)
			}
		}()
	}
}
