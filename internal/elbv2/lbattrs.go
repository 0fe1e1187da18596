package elbv2

import (
	"strconv"
	"time"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/state"
)

// lbAttr is one application load balancer attribute: its default and what
// a value must be. idle_timeout.timeout_seconds, client_keep_alive.seconds,
// deletion_protection.enabled and routing.http.xff_header_processing.mode
// and xff_client_port.enabled change what Gantry does (lbOptions); the
// others are kept and returned so tools that set them (Terraform's aws_lb
// sets most of them on every apply) see what they set.
type lbAttr struct {
	key, def string
	check    func(v string) bool
	// want describes the accepted values in the error message.
	want string
}

func boolAttr(key, def string) lbAttr {
	return lbAttr{key, def, func(v string) bool { return v == "true" || v == "false" }, "true or false"}
}

func intAttr(key, def string, lo, hi int) lbAttr {
	return lbAttr{key, def, func(v string) bool {
		n, err := strconv.Atoi(v)
		return err == nil && n >= lo && n <= hi
	}, "an integer between " + strconv.Itoa(lo) + " and " + strconv.Itoa(hi)}
}

func enumAttr(key, def string, vals ...string) lbAttr {
	want := ""
	for i, v := range vals {
		if i > 0 {
			want += ", "
		}
		want += v
	}
	return lbAttr{key, def, func(v string) bool {
		for _, x := range vals {
			if v == x {
				return true
			}
		}
		return false
	}, "one of [" + want + "]"}
}

func textAttr(key string) lbAttr {
	return lbAttr{key, "", func(v string) bool { return len(v) <= 1024 }, "at most 1024 characters"}
}

const (
	attrIdleTimeout        = "idle_timeout.timeout_seconds"
	attrDeletionProtection = "deletion_protection.enabled"
	attrClientKeepAlive    = "client_keep_alive.seconds"
	defaultIdleTimeout     = 60 * time.Second
	defaultClientKeepAlive = 3600 * time.Second
)

// albAttributes are an application load balancer's attributes in the
// order DescribeLoadBalancerAttributes lists them, with AWS's defaults.
var albAttributes = []lbAttr{
	boolAttr("access_logs.s3.enabled", "false"),
	textAttr("access_logs.s3.bucket"),
	textAttr("access_logs.s3.prefix"),
	intAttr(attrIdleTimeout, "60", 1, 4000),
	boolAttr(attrDeletionProtection, "false"),
	boolAttr("routing.http2.enabled", "true"),
	boolAttr("routing.http.drop_invalid_header_fields.enabled", "false"),
	boolAttr("routing.http.xff_client_port.enabled", "false"),
	boolAttr("routing.http.preserve_host_header.enabled", "false"),
	enumAttr("routing.http.xff_header_processing.mode", "append", "append", "preserve", "remove"),
	// An ALB always balances across zones; AWS refuses "false".
	enumAttr("load_balancing.cross_zone.enabled", "true", "true"),
	enumAttr("routing.http.desync_mitigation_mode", "defensive", "monitor", "defensive", "strictest"),
	intAttr(attrClientKeepAlive, "3600", 60, 604800),
	boolAttr("waf.fail_open.enabled", "false"),
	boolAttr("routing.http.x_amzn_tls_version_and_cipher_suite.enabled", "false"),
	boolAttr("zonal_shift.config.enabled", "false"),
	boolAttr("connection_logs.s3.enabled", "false"),
	textAttr("connection_logs.s3.bucket"),
	textAttr("connection_logs.s3.prefix"),
	boolAttr("health_check_logs.s3.enabled", "false"),
	textAttr("health_check_logs.s3.bucket"),
	textAttr("health_check_logs.s3.prefix"),
}

// optionalAttributes are accepted but listed only once set: AWS shows
// ipv6.deny_all_igw_traffic for dual-stack load balancers.
var optionalAttributes = []lbAttr{
	boolAttr("ipv6.deny_all_igw_traffic", "false"),
}

// lbAttrs are an application load balancer's attributes.
var lbAttrs = &attrTable{kind: "load balancer", listed: albAttributes, optional: optionalAttributes, most: 20}

// attr is the attribute's value, stored or default.
func (lb *lbRecord) attr(key string) string { return lbAttrs.value(lb.Attributes, key) }

// idleTimeout is idle_timeout.timeout_seconds as a duration.
func (lb *lbRecord) idleTimeout() time.Duration {
	return lb.seconds(attrIdleTimeout, defaultIdleTimeout)
}

// seconds is an attribute counted in seconds as a duration, or def.
func (lb *lbRecord) seconds(key string, def time.Duration) time.Duration {
	n, err := strconv.Atoi(lb.attr(key))
	if err != nil || n < 1 {
		return def
	}
	return time.Duration(n) * time.Second
}

func (s *Service) describeLoadBalancerAttributes(r *request) (any, error) {
	arn, err := r.required("LoadBalancerArn")
	if err != nil {
		return nil, err
	}
	var lb *lbRecord
	err = s.Store.View(r.ctx, func(tx state.Tx) error {
		lb, err = getLB(tx, r, arn)
		return err
	})
	if err != nil {
		return nil, err
	}
	return lbAttrs.out(lb.Attributes), nil
}

func (s *Service) modifyLoadBalancerAttributes(r *request) (any, error) {
	arn, err := r.required("LoadBalancerArn")
	if err != nil {
		return nil, err
	}
	set, err := lbAttrs.in(r)
	if err != nil {
		return nil, err
	}
	var lb *lbRecord
	err = s.Store.Update(r.ctx, func(tx state.Tx) error {
		if lb, err = getLB(tx, r, arn); err != nil {
			return err
		}
		if lb.Attributes == nil {
			lb.Attributes = map[string]string{}
		}
		for k, v := range set {
			lb.Attributes[k] = v
		}
		// AWS checks that logs have somewhere to go when they are turned
		// on, against the attributes as they will be.
		for _, p := range []string{"access_logs", "connection_logs", "health_check_logs"} {
			if lb.attr(p+".s3.enabled") == "true" && lb.attr(p+".s3.bucket") == "" {
				return validation("The value of '%s.s3.bucket' cannot be empty when '%s.s3.enabled' is 'true'", p, p)
			}
		}
		return tx.Put(kindLB, arn, lb)
	})
	if err != nil {
		return nil, err
	}
	s.changed()
	return lbAttrs.out(lb.Attributes), nil
}

// deletionProtected refuses to delete a load balancer that asks for it.
func deletionProtected(lb *lbRecord) error {
	if lb.attr(attrDeletionProtection) == "true" {
		return awsapi.Errorf("OperationNotPermitted", "Load balancer '%s' cannot be deleted because deletion protection is enabled", lb.ARN)
	}
	return nil
}
