package elbv2

import (
	"net/url"
	"strconv"
	"strings"

	"github.com/gantry-dev/gantry/internal/state"
)

// healthCheckIn applies a CreateTargetGroup or ModifyTargetGroup call's
// health check parameters to base: the defaults for a new group, the
// stored settings for a changed one, so a change of one field keeps the
// others and the checks across fields (timeout below interval) see the
// settings as they will be.
func (r *request) healthCheckIn(base healthCheck) (healthCheck, error) {
	h := base
	var err error
	if r.has("HealthCheckEnabled") {
		switch v := r.param("HealthCheckEnabled"); v {
		case "true", "false":
			h.Enabled = v == "true"
		default:
			return h, validation("1 validation error detected: Value '%s' at 'healthCheckEnabled' failed to satisfy constraint: Member must be true or false", v)
		}
	}
	if v := r.param("HealthCheckProtocol"); v != "" {
		if v != "HTTP" {
			return h, validation("Health check protocol '%s' is not supported; Gantry's target groups are checked over HTTP", v)
		}
		h.Protocol = v
	}
	if v := r.param("HealthCheckPort"); v != "" {
		if v != "traffic-port" {
			if n, err := strconv.Atoi(v); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != v {
				return h, validation("Health check port '%s' must be 'traffic-port' or a port number between 1 and 65535", v)
			}
		}
		h.Port = v
	}
	if r.has("HealthCheckPath") {
		v := r.param("HealthCheckPath")
		if err := checkHealthPath(v); err != nil {
			return h, err
		}
		h.Path = v
	}
	if h.Interval, err = r.intParam("HealthCheckIntervalSeconds", h.Interval, 5, 300); err != nil {
		return h, err
	}
	if h.Timeout, err = r.intParam("HealthCheckTimeoutSeconds", h.Timeout, 2, 120); err != nil {
		return h, err
	}
	if h.Timeout >= h.Interval {
		return h, validation("Health check timeout '%d' must be smaller than the interval '%d'", h.Timeout, h.Interval)
	}
	if h.Healthy, err = r.intParam("HealthyThresholdCount", h.Healthy, 2, 10); err != nil {
		return h, err
	}
	if h.Unhealthy, err = r.intParam("UnhealthyThresholdCount", h.Unhealthy, 2, 10); err != nil {
		return h, err
	}
	if r.has("Matcher.GrpcCode") {
		return h, validation("A gRPC matcher is only valid for target groups with protocol version 'GRPC'")
	}
	if r.has("Matcher.HttpCode") {
		v := r.param("Matcher.HttpCode")
		if _, err := parseMatcher(v); err != nil {
			return h, err
		}
		h.Matcher = v
	}
	return h, nil
}

// checkHealthPath accepts what the checker can put in a request line: an
// absolute path, with a query if wanted, and nothing that would need
// escaping to be sent.
func checkHealthPath(v string) error {
	bad := !strings.HasPrefix(v, "/") || len(v) > 1024
	for i := 0; i < len(v) && !bad; i++ {
		bad = v[i] <= ' ' || v[i] >= 0x7f || v[i] == '#'
	}
	if !bad {
		u, err := url.ParseRequestURI(v)
		bad = err != nil || u.Host != "" || u.Scheme != ""
	}
	if bad {
		return validation("Health check path '%s' must begin with '/', be at most 1024 characters and contain only printable ASCII characters other than space and '#'", v)
	}
	return nil
}

// modifyTargetGroup changes a group's health check. The data plane's
// checkers read the stored settings at every round and are woken by
// reconcile when they change, so a new path or interval is in use as the
// call returns.
func (s *Service) modifyTargetGroup(r *request) (any, error) {
	arn, err := r.required("TargetGroupArn")
	if err != nil {
		return nil, err
	}
	var out *tgRecord
	var lbs []string
	err = s.Store.Update(r.ctx, func(tx state.Tx) error {
		g, err := getTG(tx, r, arn)
		if err != nil {
			return err
		}
		if g.HealthCheck, err = r.healthCheckIn(g.HealthCheck); err != nil {
			return err
		}
		if lbs, err = lbsOfTG(tx, r, arn); err != nil {
			return err
		}
		out = g
		return tx.Put(kindTG, arn, g)
	})
	if err != nil {
		return nil, err
	}
	s.changed()
	return struct {
		TargetGroups []tgXML `xml:"TargetGroups>member"`
	}{[]tgXML{tgOut(out, lbs)}}, nil
}
