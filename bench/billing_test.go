package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/billing"
)

// BenchmarkBillingReport groups one million usage records (a year of hourly
// records for ~115 tasks running around the clock) the ways `gantry billing
// report` and Cost Explorer do. Each report must take under a second.
//
//	go test -run '^$' -bench BillingReport -benchtime 5x ./bench
func BenchmarkBillingReport(b *testing.B) {
	const n = 1_000_000
	ledger := billing.NewLedger()
	r := rand.New(rand.NewPCG(7, 7))
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	sizes := [][2]int64{{256, 512}, {512, 1024}, {1024, 2048}, {2048, 8192}, {4096, 30720}}
	batch := make([]*billing.UsageRecord, 0, 10000)
	for i := 0; i < n; i++ {
		sz := sizes[r.IntN(len(sizes))]
		ms := int64(60_000 + r.IntN(3_540_000))
		spot := r.IntN(4) == 0
		capacity, ut := "FARGATE", "USE1-Fargate-"
		if spot {
			capacity, ut = "FARGATE_SPOT", "USE1-SpotUsage-Fargate-"
		}
		task := i % 115
		rec := &billing.UsageRecord{
			Account: "000000000000", Region: "us-east-1", Hour: start + int64(i/115)*3600,
			TaskARN: fmt.Sprintf("arn:aws:ecs:us-east-1:000000000000:task/c%d/%032d", task%7, task),
			Cluster: fmt.Sprintf("c%d", task%7), Family: fmt.Sprintf("fam%d", task%13), Service: fmt.Sprintf("svc%d", task%5),
			Capacity: capacity, Arch: "x86_64", CPU: sz[0], MemoryMiB: sz[1], EphemeralGiB: 20,
			Tags: map[string]string{"team": fmt.Sprintf("t%d", task%4), "env": "prod"},
			Lines: []billing.Line{
				{UsageType: ut + "vCPU-Hours:perCPU", Kind: billing.KindVCPU, Qty: sz[0] * ms, Cost: fmt.Sprintf("0.%010d", r.IntN(1e9))},
				{UsageType: ut + "GB-Hours", Kind: billing.KindMemory, Qty: sz[1] * ms, Cost: fmt.Sprintf("0.%010d", r.IntN(1e8))},
			},
		}
		if i%10 == 0 {
			rec.EphemeralGiB = 100
			rec.Lines = append(rec.Lines, billing.Line{UsageType: ut + "EphemeralStorage-GB-Hours", Kind: billing.KindStorage, Qty: 80 * ms, Cost: fmt.Sprintf("0.%010d", r.IntN(1e7))})
		}
		batch = append(batch, rec)
		if len(batch) == cap(batch) {
			ledger.Apply(batch, nil)
			batch = batch[:0]
		}
	}
	ledger.Apply(batch, nil)
	if ledger.Len() != n {
		b.Fatalf("ledger holds %d records", ledger.Len())
	}
	s := func(v string) *string { return &v }
	queries := map[string]billing.Query{
		"total":               {},
		"by-cluster":          {GroupBy: []billing.Dim{{Kind: billing.DimCluster}}},
		"by-task":             {GroupBy: []billing.Dim{{Kind: billing.DimTask}}},
		"by-tag":              {GroupBy: []billing.Dim{{Kind: billing.DimTag, Key: "team"}}},
		"by-day":              {GroupBy: []billing.Dim{{Kind: billing.DimDay}}},
		"by-hour":             {GroupBy: []billing.Dim{{Kind: billing.DimHour}}},
		"by-family-and-day":   {GroupBy: []billing.Dim{{Kind: billing.DimFamily}, {Kind: billing.DimDay}}},
		"ce-daily-usage-type": {GroupBy: []billing.Dim{{Kind: billing.DimDay}, {Kind: billing.DimUsageType}}},
		"ce-monthly-filtered": {GroupBy: []billing.Dim{{Kind: billing.DimMonth}, {Kind: billing.DimTag, Key: "team"}},
			Filter: &billing.Filter{Dimensions: &billing.ValueFilter{Key: s("USAGE_TYPE"), Values: []string{"SpotUsage"}, MatchOptions: []string{"CONTAINS"}}}},
	}
	for name, q := range queries {
		b.Run(name, func(b *testing.B) {
			var worst time.Duration
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				res, err := ledger.Run(q)
				if err != nil {
					b.Fatal(err)
				}
				worst = max(worst, time.Since(t0))
				if res.Total.Cost == 0 {
					b.Fatal("empty report")
				}
			}
			b.ReportMetric(float64(worst.Microseconds())/1000, "worst-ms")
			if worst > time.Second {
				b.Errorf("report over %d records took %v, want under 1s", n, worst)
			}
		})
	}
}

// BenchmarkRunTaskMetering compares RunTask → RUNNING with metering on and
// off (GANTRY_BILLING=off), in one run: the meter works from stored records
// in the background, so it should add nothing measurable.
//
//	go test -run '^$' -bench RunTaskMetering -benchtime 30x -timeout 30m ./bench
func BenchmarkRunTaskMetering(b *testing.B) {
	for _, mode := range []string{"on", "off"} {
		b.Run("metering-"+mode, func(b *testing.B) {
			if mode == "off" {
				b.Setenv("GANTRY_BILLING", "off")
			}
			e := setup(b)
			ctx := context.Background()
			var lat []time.Duration
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				arns, err := e.run(ctx, 1)
				if err != nil {
					b.Fatal(err)
				}
				wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
				err = e.waitStatus(wctx, arns, "RUNNING", 5*time.Millisecond)
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(t0))
				b.StopTimer()
				e.stopAll(b, arns)
				b.StartTimer()
			}
			report(b, lat)
		})
	}
}
