package elbv2

import (
	"strconv"
	"strings"

	"github.com/gantry-dev/gantry/internal/state"
)

const (
	attrDeregDelay = "deregistration_delay.timeout_seconds"
	attrAlgorithm  = "load_balancing.algorithm.type"
)

// offOrInt accepts "off" or an integer within [lo, hi].
func offOrInt(key, def string, lo, hi int) lbAttr {
	a := intAttr(key, def, lo, hi)
	in := a.check
	a.check = func(v string) bool { return v == "off" || in(v) }
	a.want = "off or " + a.want
	return a
}

// tgAttributes are an ip target group's attributes behind an application
// load balancer, in the order DescribeTargetGroupAttributes lists them,
// with AWS's defaults. deregistration_delay.timeout_seconds (draining)
// and load_balancing.algorithm.type (round_robin or
// least_outstanding_requests; weighted_random is taken as round_robin)
// change what Gantry does; the others are validated, kept and returned,
// so Terraform's aws_lb_target_group, which sets stickiness and the
// algorithm on every apply, sees what it set.
var tgAttributes = []lbAttr{
	boolAttr("stickiness.enabled", "false"),
	intAttr(attrDeregDelay, "300", 0, 3600),
	{"stickiness.app_cookie.cookie_name", "", appCookieName, "a cookie name of at most 255 characters that does not begin with AWSALB, AWSALBAPP or AWSALBTG"},
	enumAttr("stickiness.type", "lb_cookie", "lb_cookie", "app_cookie"),
	intAttr("stickiness.lb_cookie.duration_seconds", "86400", 1, 604800),
	{"slow_start.duration_seconds", "0", func(v string) bool {
		n, err := strconv.Atoi(v)
		return err == nil && strconv.Itoa(n) == v && (n == 0 || n >= 30 && n <= 900)
	}, "0 (off) or an integer between 30 and 900"},
	intAttr("stickiness.app_cookie.duration_seconds", "86400", 1, 604800),
	enumAttr(attrAlgorithm, "round_robin", "round_robin", "least_outstanding_requests", "weighted_random"),
	enumAttr("load_balancing.algorithm.anomaly_mitigation", "off", "on", "off"),
	enumAttr("load_balancing.cross_zone.enabled", "use_load_balancer_configuration", "true", "false", "use_load_balancer_configuration"),
	offOrInt("target_group_health.dns_failover.minimum_healthy_targets.count", "1", 1, 1000),
	offOrInt("target_group_health.dns_failover.minimum_healthy_targets.percentage", "off", 1, 100),
	intAttr("target_group_health.unhealthy_state_routing.minimum_healthy_targets.count", "1", 1, 1000),
	offOrInt("target_group_health.unhealthy_state_routing.minimum_healthy_targets.percentage", "off", 1, 100),
}

// appCookieName is a cookie-name token (RFC 6265) not reserved by ALB.
func appCookieName(v string) bool {
	if len(v) > 255 {
		return false
	}
	for _, p := range []string{"AWSALB", "AWSALBAPP", "AWSALBTG"} {
		if strings.HasPrefix(strings.ToUpper(v), p) {
			return false
		}
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", c) >= 0 {
			return false
		}
	}
	return true
}

// tgAttrs are an ip target group's attributes.
var tgAttrs = &attrTable{kind: "target group", listed: tgAttributes}

// attr is the group's attribute, stored or default.
func (g *tgRecord) attr(key string) string { return tgAttrs.value(g.Attributes, key) }

// checkTGAttributes checks the attributes as they will be together.
func checkTGAttributes(g *tgRecord) error {
	algo := g.attr(attrAlgorithm)
	if g.attr("load_balancing.algorithm.anomaly_mitigation") == "on" && algo != "weighted_random" {
		return validation("Anomaly mitigation can only be turned on when '%s' is 'weighted_random'", attrAlgorithm)
	}
	if g.attr("slow_start.duration_seconds") != "0" && algo != "round_robin" {
		return validation("Slow start can only be used when '%s' is 'round_robin'", attrAlgorithm)
	}
	return nil
}

func (s *Service) describeTargetGroupAttributes(r *request) (any, error) {
	arn, err := r.required("TargetGroupArn")
	if err != nil {
		return nil, err
	}
	var g *tgRecord
	err = s.Store.View(r.ctx, func(tx state.Tx) error {
		g, err = getTG(tx, r, arn)
		return err
	})
	if err != nil {
		return nil, err
	}
	return tgAttrs.out(g.Attributes), nil
}

func (s *Service) modifyTargetGroupAttributes(r *request) (any, error) {
	arn, err := r.required("TargetGroupArn")
	if err != nil {
		return nil, err
	}
	set, err := tgAttrs.in(r)
	if err != nil {
		return nil, err
	}
	var g *tgRecord
	err = s.Store.Update(r.ctx, func(tx state.Tx) error {
		if g, err = getTG(tx, r, arn); err != nil {
			return err
		}
		if g.Attributes == nil {
			g.Attributes = map[string]string{}
		}
		for k, v := range set {
			g.Attributes[k] = v
		}
		if err := checkTGAttributes(g); err != nil {
			return err
		}
		return tx.Put(kindTG, arn, g)
	})
	if err != nil {
		return nil, err
	}
	s.changed()
	return tgAttrs.out(g.Attributes), nil
}
