package elbv2

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/gantry-dev/gantry/internal/state"
)

const attrServerHeader = "routing.http.response.server.enabled"

// responseHeaderAttrs maps each routing.http.response.*.header_value
// listener attribute to the response header it sets. Empty (the default)
// leaves responses alone; a value is set on every response, replacing the
// target's own header of that name, as an ALB does.
var responseHeaderAttrs = map[string]string{
	"routing.http.response.access_control_allow_headers.header_value":     "Access-Control-Allow-Headers",
	"routing.http.response.x_frame_options.header_value":                  "X-Frame-Options",
	"routing.http.response.access_control_allow_methods.header_value":     "Access-Control-Allow-Methods",
	"routing.http.response.access_control_allow_origin.header_value":      "Access-Control-Allow-Origin",
	"routing.http.response.access_control_allow_credentials.header_value": "Access-Control-Allow-Credentials",
	"routing.http.response.x_content_type_options.header_value":           "X-Content-Type-Options",
	"routing.http.response.content_security_policy.header_value":          "Content-Security-Policy",
	"routing.http.response.access_control_expose_headers.header_value":    "Access-Control-Expose-Headers",
	"routing.http.response.strict_transport_security.header_value":        "Strict-Transport-Security",
	"routing.http.response.access_control_max_age.header_value":           "Access-Control-Max-Age",
}

// headerAttr is a response header attribute: empty or a value check
// accepts, which must also be a valid header field value.
func headerAttr(key string, check func(string) bool, want string) lbAttr {
	return lbAttr{key, "", func(v string) bool {
		return v == "" || validFieldValue(v) && (check == nil || check(v))
	}, want}
}

// httpListenerAttributes are an HTTP listener's attributes on an
// application load balancer, in the order DescribeListenerAttributes
// lists them, with AWS's defaults. All of them act on responses
// (listenerResponse); the mTLS/TLS header names are HTTPS listeners' and
// tcp.idle_timeout.seconds network load balancers', so neither applies.
var httpListenerAttributes = []lbAttr{
	boolAttr(attrServerHeader, "true"),
	headerAttr("routing.http.response.access_control_allow_headers.header_value", tokenListOrStar, "'*' or a comma-separated list of header names"),
	headerAttr("routing.http.response.x_frame_options.header_value", frameOptions, "DENY, SAMEORIGIN or ALLOW-FROM followed by a URI"),
	headerAttr("routing.http.response.access_control_allow_methods.header_value", methodList, "'*' or a comma-separated list of HTTP methods"),
	headerAttr("routing.http.response.access_control_allow_origin.header_value", originValue, "'*', 'null' or an origin such as https://example.com"),
	headerAttr("routing.http.response.access_control_allow_credentials.header_value", func(v string) bool { return v == "true" }, "true"),
	headerAttr("routing.http.response.x_content_type_options.header_value", func(v string) bool { return v == "nosniff" }, "nosniff"),
	headerAttr("routing.http.response.content_security_policy.header_value", nil, "a valid header value of at most 1024 characters"),
	headerAttr("routing.http.response.access_control_expose_headers.header_value", tokenListOrStar, "'*' or a comma-separated list of header names"),
	headerAttr("routing.http.response.strict_transport_security.header_value", hstsValue, "a Strict-Transport-Security value with a max-age directive, such as max-age=31536000; includeSubDomains"),
	headerAttr("routing.http.response.access_control_max_age.header_value", func(v string) bool {
		n, err := strconv.Atoi(v)
		return err == nil && strconv.Itoa(n) == v && n >= 0 && n <= 86400
	}, "an integer between 0 and 86400"),
}

// validFieldValue is a header field value (RFC 9110) Go will send as it
// is: visible ASCII, spaces and tabs, not starting or ending with either.
func validFieldValue(v string) bool {
	if len(v) > 1024 || strings.TrimSpace(v) != v {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c >= 0x7f {
			return false
		}
	}
	return true
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", c) >= 0 {
			return false
		}
	}
	return true
}

func tokenListOrStar(v string) bool {
	if v == "*" {
		return true
	}
	for _, p := range strings.Split(v, ",") {
		if !isToken(strings.TrimSpace(p)) {
			return false
		}
	}
	return true
}

func methodList(v string) bool {
	if v == "*" {
		return true
	}
	for _, p := range strings.Split(v, ",") {
		switch strings.TrimSpace(p) {
		case "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH":
		default:
			return false
		}
	}
	return true
}

func originValue(v string) bool {
	if v == "*" || v == "null" {
		return true
	}
	u, err := url.Parse(v)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.Path == "" &&
		u.RawQuery == "" && u.Fragment == "" && u.User == nil
}

func frameOptions(v string) bool {
	if v == "DENY" || v == "SAMEORIGIN" {
		return true
	}
	uri, ok := strings.CutPrefix(v, "ALLOW-FROM ")
	return ok && originValue(strings.TrimRight(uri, "/")) && uri != "*" && uri != "null"
}

func hstsValue(v string) bool {
	seen := false
	for _, d := range strings.Split(v, ";") {
		d = strings.TrimSpace(d)
		if n, ok := strings.CutPrefix(strings.ToLower(d), "max-age="); ok {
			if _, err := strconv.ParseUint(strings.Trim(n, `"`), 10, 32); err != nil || seen {
				return false
			}
			seen = true
		}
	}
	return seen
}

// listenerAttrs are an HTTP listener's attributes. Header values may
// always be empty (the default: the response is left alone).
var listenerAttrs = &attrTable{kind: "listener", listed: httpListenerAttributes, mustPrefix: "empty or ",
	refuse: func(k string) error {
		if strings.HasPrefix(k, "routing.http.request.") || k == "tcp.idle_timeout.seconds" {
			return validation("Listener attribute key '%s' is not supported on HTTP listeners of application load balancers", k)
		}
		return nil
	}}

// attr is the listener's attribute, stored or default.
func (l *listenerRecord) attr(key string) string { return listenerAttrs.value(l.Attributes, key) }

func (s *Service) describeListenerAttributes(r *request) (any, error) {
	arn, err := r.required("ListenerArn")
	if err != nil {
		return nil, err
	}
	var l *listenerRecord
	err = s.Store.View(r.ctx, func(tx state.Tx) error {
		l, err = getListener(tx, r, arn)
		return err
	})
	if err != nil {
		return nil, err
	}
	return listenerAttrs.out(l.Attributes), nil
}

func (s *Service) modifyListenerAttributes(r *request) (any, error) {
	arn, err := r.required("ListenerArn")
	if err != nil {
		return nil, err
	}
	set, err := listenerAttrs.in(r)
	if err != nil {
		return nil, err
	}
	var l *listenerRecord
	err = s.Store.Update(r.ctx, func(tx state.Tx) error {
		if l, err = getListener(tx, r, arn); err != nil {
			return err
		}
		if l.Attributes == nil {
			l.Attributes = map[string]string{}
		}
		for k, v := range set {
			l.Attributes[k] = v
		}
		return tx.Put(kindListener, arn, l)
	})
	if err != nil {
		return nil, err
	}
	s.changed()
	return listenerAttrs.out(l.Attributes), nil
}

// listenerResponse is what a listener's attributes do to the responses it
// sends: the targets' and its own.
type listenerResponse struct {
	// noServer drops the Server header the load balancer puts on the
	// responses it makes itself (errors, fixed responses).
	noServer bool
	set      [][2]string // header, value
}

func (l *listenerRecord) response() *listenerResponse {
	lr := &listenerResponse{noServer: l.attr(attrServerHeader) == "false"}
	for _, a := range httpListenerAttributes {
		if h, ok := responseHeaderAttrs[a.key]; ok {
			if v := l.attr(a.key); v != "" {
				lr.set = append(lr.set, [2]string{h, v})
			}
		}
	}
	return lr
}

func (lr *listenerResponse) equal(o *listenerResponse) bool {
	if lr == nil || o == nil || lr.noServer != o.noServer || len(lr.set) != len(o.set) {
		return false
	}
	for i := range lr.set {
		if lr.set[i] != o.set[i] {
			return false
		}
	}
	return true
}

// apply sets the configured headers on a response's header; own is true
// for the responses the load balancer makes itself, which carry its
// Server header unless the listener turned it off.
func (lr *listenerResponse) apply(h http.Header, own bool) {
	if own && (lr == nil || !lr.noServer) {
		h.Set("Server", "awselb/2.0")
	}
	if lr == nil {
		return
	}
	for _, kv := range lr.set {
		h[kv[0]] = []string{kv[1]}
	}
}
