package elbv2

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gantry-dev/gantry/internal/cloudwatch"
	"github.com/gantry-dev/gantry/internal/state"
)

// CloudWatch's AWS/ApplicationELB metrics from the proxies' own counts:
// RequestCount per load balancer and target group, RequestCountPerTarget
// (a group's requests over its healthy targets, what
// ALBRequestCountPerTarget target tracking follows) and HealthyHostCount.
// Published every reconcile tick, zeros included while a group is in use,
// so a quiet service reads 0 rather than missing data, and scale-in works.

const NamespaceALB = "AWS/ApplicationELB"

// LoadBalancerDim is the LoadBalancer dimension's value:
// app/NAME/ID, the ARN after "loadbalancer/".
func LoadBalancerDim(lbARN string) string {
	_, v, _ := strings.Cut(lbARN, ":loadbalancer/")
	return v
}

// TargetGroupDim is the TargetGroup dimension's value:
// targetgroup/NAME/ID, the ARN's resource.
func TargetGroupDim(tgARN string) string {
	return tgARN[strings.LastIndex(tgARN, ":")+1:]
}

// accountRegion reads them from an elasticloadbalancing ARN.
func accountRegion(arn string) (account, region string) {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) < 6 {
		return "", ""
	}
	return parts[4], parts[3]
}

// publishMetrics writes one datapoint per metric for every target group
// a listener uses: the requests since the last call.
func (p *plane) publishMetrics(ctx context.Context, now time.Time) {
	ms := p.s.Metrics
	if ms == nil {
		return
	}
	p.mu.Lock()
	type use struct {
		pl      *pool
		lbs     []string
		delta   int64
		healthy int
	}
	var uses []use
	for arn, lbs := range p.tgLBs {
		pl := p.pools[arn]
		if pl == nil {
			continue
		}
		n := pl.requests.Load()
		u := use{pl: pl, lbs: lbs, delta: n - pl.published}
		pl.published = n
		pl.mu.Lock()
		for _, t := range pl.list {
			if t.serving() {
				u.healthy++
			}
		}
		pl.mu.Unlock()
		uses = append(uses, u)
	}
	p.mu.Unlock()

	var pts []cloudwatch.Point
	perLB := map[string]float64{}
	for _, u := range uses {
		acct, region := accountRegion(u.pl.arn)
		tg := TargetGroupDim(u.pl.arn)
		point := func(name, unit string, v float64, dims ...cloudwatch.Dim) {
			pts = append(pts, cloudwatch.Point{Metric: cloudwatch.MetricID{Account: acct, Region: region, Namespace: NamespaceALB, Name: name, Dims: dims},
				Time: now, Unit: unit, Stats: cloudwatch.Of(v)})
		}
		per := float64(u.delta)
		if u.healthy > 0 {
			per /= float64(u.healthy)
		}
		point("RequestCountPerTarget", "Count", per, cloudwatch.Dim{Name: "TargetGroup", Value: tg})
		for _, lb := range u.lbs {
			lbDim := cloudwatch.Dim{Name: "LoadBalancer", Value: LoadBalancerDim(lb)}
			tgDim := cloudwatch.Dim{Name: "TargetGroup", Value: tg}
			point("RequestCountPerTarget", "Count", per, lbDim, tgDim)
			point("RequestCount", "Count", float64(u.delta), lbDim, tgDim)
			point("HealthyHostCount", "Count", float64(u.healthy), lbDim, tgDim)
			perLB[lb] += float64(u.delta)
		}
	}
	for lb, n := range perLB {
		acct, region := accountRegion(lb)
		pts = append(pts, cloudwatch.Point{Metric: cloudwatch.MetricID{Account: acct, Region: region, Namespace: NamespaceALB, Name: "RequestCount",
			Dims: []cloudwatch.Dim{{Name: "LoadBalancer", Value: LoadBalancerDim(lb)}}}, Time: now, Unit: "Count", Stats: cloudwatch.Of(n)})
	}
	if err := ms.Put(ctx, pts); err != nil && ctx.Err() == nil {
		p.s.logger().Warn("load balancers: metrics", "err", err)
	}
}

// CheckResourceLabel checks an Application Auto Scaling ResourceLabel
// (app/LB/ID/targetgroup/TG/ID) against the account's load balancers: both
// exist and a listener of that load balancer forwards to the group.
func CheckResourceLabel(tx state.Tx, account, region, label string) error {
	lbPart, tgPart, ok := strings.Cut(label, "/targetgroup/")
	if !ok {
		return fmt.Errorf("it must be app/<load-balancer-name>/<load-balancer-id>/targetgroup/<target-group-name>/<target-group-id>")
	}
	prefix := arnPrefix(account, region)
	lbARN, tgARN := prefix+"loadbalancer/"+lbPart, prefix+"targetgroup/"+tgPart
	var lb lbRecord
	if ok, err := tx.Get(kindLB, lbARN, &lb); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("load balancer %s does not exist", lbPart)
	}
	var g tgRecord
	if ok, err := tx.Get(kindTG, tgARN, &g); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("target group targetgroup/%s does not exist", tgPart)
	}
	r := &request{account: account, region: region}
	lbs, err := lbsOfTG(tx, r, tgARN)
	if err != nil {
		return err
	}
	if !slices.Contains(lbs, lbARN) {
		return fmt.Errorf("target group targetgroup/%s is not used by a listener of load balancer %s", tgPart, lbPart)
	}
	return nil
}
