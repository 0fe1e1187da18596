// Package elbv2 is Gantry's Elastic Load Balancing (v2) subset: the Query
// API for application load balancers, target groups (target type ip, with
// health checks changed in place by ModifyTargetGroup) and HTTP listeners
// forwarding to them, the attributes of all three, targets with their
// health, and tags on all of them; and the data plane that
// serves them: each listener is an HTTP reverse proxy (net/http/httputil)
// on the load balancer's own loopback address, forwarding round-robin to
// the healthy targets that active health checks find, with connection
// draining on deregistration. ECS services register their tasks through
// SyncServiceTargets (ecs.TargetRegistrar).
package elbv2

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/cloudwatch"
	"github.com/gantry-dev/gantry/internal/state"
)

// Namespace is the ELBv2 API version's XML namespace.
const Namespace = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"

// SigningName is the credential scope's service name the router routes by.
const SigningName = "elasticloadbalancing"

// Document kinds. Keys are the resources' ARNs, which begin with
// region and account, so a prefix lists a scope.
const (
	kindLB       = "elbv2.loadbalancer" // ARN -> lbRecord
	kindTG       = "elbv2.targetgroup"  // ARN -> tgRecord
	kindListener = "elbv2.listener"     // ARN -> listenerRecord
)

// DefaultAddressRange is where load balancers get their addresses: each
// one its own loopback address, so every listener binds its real port.
const DefaultAddressRange = "127.0.0.0/8"

// Service answers ELBv2 Query requests and runs the data plane.
type Service struct {
	Store state.Store
	Log   *slog.Logger
	// AddressRange is the range load balancers' addresses (their DNSName)
	// are drawn from; default DefaultAddressRange. A single address (/32)
	// makes every load balancer share it, and their listeners its ports.
	AddressRange string
	// Metrics, when set, receives the AWS/ApplicationELB metrics.
	Metrics *cloudwatch.Store

	plane *plane
}

type tag struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

type lbRecord struct {
	ARN            string    `json:"arn"`
	Name           string    `json:"name"`
	Scheme         string    `json:"scheme"`
	Type           string    `json:"type"`
	VpcID          string    `json:"vpcId"`
	IPAddressType  string    `json:"ipAddressType"`
	Address        string    `json:"address"`
	Zones          []zoneRef `json:"zones"`
	SecurityGroups []string  `json:"securityGroups,omitempty"`
	Created        time.Time `json:"created"`
	Tags           []tag     `json:"tags,omitempty"`
	// Attributes are the ones set by ModifyLoadBalancerAttributes; the
	// rest have their defaults (albAttributes).
	Attributes map[string]string `json:"attributes,omitempty"`
}

type zoneRef struct {
	SubnetID string `json:"subnetId"`
	Zone     string `json:"zone"`
}

type healthCheck struct {
	Enabled   bool   `json:"enabled"`
	Protocol  string `json:"protocol"`
	Port      string `json:"port"` // "traffic-port" or a number
	Path      string `json:"path"`
	Interval  int32  `json:"interval"`
	Timeout   int32  `json:"timeout"`
	Healthy   int32  `json:"healthy"`
	Unhealthy int32  `json:"unhealthy"`
	Matcher   string `json:"matcher"`
}

type targetRecord struct {
	ID   string `json:"id"`
	Port int32  `json:"port"`
	// Owner is the ECS service that registered the target, if any.
	Owner string `json:"owner,omitempty"`
	// DrainUntil is set once the target is deregistered: it gets no new
	// requests and is removed at that time.
	DrainUntil *time.Time `json:"drainUntil,omitempty"`
}

type tgRecord struct {
	ARN             string            `json:"arn"`
	Name            string            `json:"name"`
	Protocol        string            `json:"protocol"`
	ProtocolVersion string            `json:"protocolVersion"`
	Port            int32             `json:"port"`
	VpcID           string            `json:"vpcId"`
	TargetType      string            `json:"targetType"`
	HealthCheck     healthCheck       `json:"healthCheck"`
	Attributes      map[string]string `json:"attributes,omitempty"`
	Targets         []targetRecord    `json:"targets,omitempty"`
	Tags            []tag             `json:"tags,omitempty"`
}

// drainDelay is deregistration_delay.timeout_seconds.
func (g *tgRecord) drainDelay() time.Duration {
	n, err := strconv.Atoi(g.Attributes["deregistration_delay.timeout_seconds"])
	if err != nil {
		n = 300
	}
	return time.Duration(n) * time.Second
}

type actionRecord struct {
	Type string `json:"type"`
	// TargetGroupARN is a forward action's one group; Forward its groups
	// when it has several, with weights.
	TargetGroupARN string          `json:"targetGroupArn,omitempty"`
	Forward        []weightedGroup `json:"forward,omitempty"`
	Fixed          *fixedResponse  `json:"fixed,omitempty"`
	Order          int32           `json:"order,omitempty"`
}

type listenerRecord struct {
	ARN      string         `json:"arn"`
	LBARN    string         `json:"lbArn"`
	Port     int32          `json:"port"`
	Protocol string         `json:"protocol"`
	Actions  []actionRecord `json:"actions"`
	Tags     []tag          `json:"tags,omitempty"`
	// Attributes are the ones set by ModifyListenerAttributes; the rest
	// have their defaults (httpListenerAttributes).
	Attributes map[string]string `json:"attributes,omitempty"`
}

func arnPrefix(account, region string) string {
	return "arn:aws:elasticloadbalancing:" + region + ":" + account + ":"
}

func newHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// randomAddress picks an address in rng for a new load balancer, avoiding
// the range's first /24 (127.0.0.1 and friends) when it is large enough.
func randomAddress(rng string) (string, error) {
	p, err := netip.ParsePrefix(rng)
	if err != nil || !p.Addr().Is4() {
		return "", fmt.Errorf("bad load balancer address range %q", rng)
	}
	p = p.Masked()
	if p.Bits() == 32 {
		return p.Addr().String(), nil
	}
	base := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	for {
		var b [4]byte
		rand.Read(b[:])
		n := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) & host
		if n&0xff == 0 || n&0xff == 0xff || (host > 0xffff && n <= 0xff) {
			continue
		}
		v := (uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])) | n
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}).String(), nil
	}
}

// request is one Query call.
type request struct {
	ctx             context.Context
	form            map[string][]string
	account, region string
}

func (r *request) param(name string) string {
	if v := r.form[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (r *request) has(name string) bool { _, ok := r.form[name]; return ok }

func (r *request) required(name string) (string, error) {
	v := r.param(name)
	if v == "" {
		return "", validation("1 validation error detected: Value null at '%s' failed to satisfy constraint: Member must not be null", lowerFirst(name))
	}
	return v, nil
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}

// intParam parses an optional integer within [lo, hi]; def when absent.
func (r *request) intParam(name string, def, lo, hi int32) (int32, error) {
	if !r.has(name) {
		return def, nil
	}
	n, err := strconv.ParseInt(r.param(name), 10, 32)
	if err != nil {
		return 0, validation("Value '%s' at '%s' failed to satisfy constraint: Member must be an integer", r.param(name), lowerFirst(name))
	}
	if int32(n) < lo || int32(n) > hi {
		return 0, validation("1 validation error detected: Value '%d' at '%s' failed to satisfy constraint: Member must have value between %d and %d", n, lowerFirst(name), lo, hi)
	}
	return int32(n), nil
}

// list returns a Query list's members (Name.member.N) in index order.
func (r *request) list(name string) []string {
	var idx []int
	vals := map[int]string{}
	for k, v := range r.form {
		rest, ok := strings.CutPrefix(k, name+".member.")
		if !ok || len(v) == 0 {
			continue
		}
		if n, err := strconv.Atoi(rest); err == nil {
			idx = append(idx, n)
			vals[n] = v[0]
		}
	}
	sort.Ints(idx)
	out := make([]string, 0, len(idx))
	for _, n := range idx {
		out = append(out, vals[n])
	}
	return out
}

// structs returns the member prefixes ("Name.member.N.") of a list of
// structures in index order.
func (r *request) structs(name string) []string {
	seen := map[int]bool{}
	var idx []int
	for k := range r.form {
		rest, ok := strings.CutPrefix(k, name+".member.")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(rest, ".")
		if i, err := strconv.Atoi(n); err == nil && !seen[i] {
			seen[i] = true
			idx = append(idx, i)
		}
	}
	sort.Ints(idx)
	out := make([]string, len(idx))
	for i, n := range idx {
		out[i] = fmt.Sprintf("%s.member.%d.", name, n)
	}
	return out
}

func (r *request) tags() ([]tag, error) {
	var out []tag
	seen := map[string]bool{}
	for _, p := range r.structs("Tags") {
		t := tag{r.param(p + "Key"), r.param(p + "Value")}
		if err := checkTag(t); err != nil {
			return nil, err
		}
		if seen[t.Key] {
			return nil, awsapi.Errorf("DuplicateTagKeys", "Tag key '%s' is duplicated", t.Key)
		}
		seen[t.Key] = true
		out = append(out, t)
	}
	if len(out) > maxTags {
		return nil, awsapi.Errorf("TooManyTags", "A resource can have at most %d tags; %d were given", maxTags, len(out))
	}
	return out, nil
}

func validation(format string, args ...any) error {
	return awsapi.Errorf("ValidationError", format, args...)
}

type action func(s *Service, r *request) (any, error)

var actions = map[string]action{
	"CreateLoadBalancer":             (*Service).createLoadBalancer,
	"DescribeLoadBalancers":          (*Service).describeLoadBalancers,
	"DeleteLoadBalancer":             (*Service).deleteLoadBalancer,
	"CreateTargetGroup":              (*Service).createTargetGroup,
	"DescribeTargetGroups":           (*Service).describeTargetGroups,
	"DeleteTargetGroup":              (*Service).deleteTargetGroup,
	"ModifyTargetGroup":              (*Service).modifyTargetGroup,
	"ModifyTargetGroupAttributes":    (*Service).modifyTargetGroupAttributes,
	"DescribeTargetGroupAttributes":  (*Service).describeTargetGroupAttributes,
	"CreateListener":                 (*Service).createListener,
	"DescribeListeners":              (*Service).describeListeners,
	"DeleteListener":                 (*Service).deleteListener,
	"RegisterTargets":                (*Service).registerTargets,
	"DeregisterTargets":              (*Service).deregisterTargets,
	"DescribeTargetHealth":           (*Service).describeTargetHealth,
	"ModifyListener":                 (*Service).modifyListener,
	"CreateRule":                     (*Service).createRule,
	"DescribeRules":                  (*Service).describeRules,
	"ModifyRule":                     (*Service).modifyRule,
	"DeleteRule":                     (*Service).deleteRule,
	"SetRulePriorities":              (*Service).setRulePriorities,
	"DescribeListenerAttributes":     (*Service).describeListenerAttributes,
	"ModifyListenerAttributes":       (*Service).modifyListenerAttributes,
	"DescribeLoadBalancerAttributes": (*Service).describeLoadBalancerAttributes,
	"ModifyLoadBalancerAttributes":   (*Service).modifyLoadBalancerAttributes,
	"AddTags":                        (*Service).addTags,
	"RemoveTags":                     (*Service).removeTags,
	"DescribeTags":                   (*Service).describeTags,
}

// ServeQuery answers one ELBv2 call.
func (s *Service) ServeQuery(w http.ResponseWriter, r *http.Request, form map[string][]string) {
	req := &request{ctx: r.Context(), form: form}
	name := req.param("Action")
	fn, ok := actions[name]
	if !ok {
		if name == "" {
			s.WriteError(w, awsapi.Errorf("MissingAction", "The request must contain the parameter Action"))
			return
		}
		s.WriteError(w, awsapi.Errorf("InvalidAction", "The action %s is not valid for this web service.", name))
		return
	}
	id := awsapi.IdentityFrom(r.Context())
	req.account, req.region = id.Account, id.Region
	out, err := awsapi.Guard(func() (any, error) { return fn(s, req) })
	if err != nil {
		s.WriteError(w, awsapi.AsError(err))
		return
	}
	type meta struct {
		RequestId string
	}
	awsapi.WriteXML(w, http.StatusOK, struct {
		XMLName          xml.Name
		Xmlns            string `xml:"xmlns,attr"`
		Result           any
		ResponseMetadata meta
	}{
		XMLName:          xml.Name{Local: name + "Response"},
		Xmlns:            Namespace,
		Result:           resultXML{name: name + "Result", v: out},
		ResponseMetadata: meta{w.Header().Get("X-Amzn-RequestId")},
	})
}

// resultXML names the result element after the action.
type resultXML struct {
	name string
	v    any
}

func (r resultXML) MarshalXML(e *xml.Encoder, _ xml.StartElement) error {
	return e.EncodeElement(r.v, xml.StartElement{Name: xml.Name{Local: r.name}})
}

// WriteError writes e in the standard Query error XML.
func (s *Service) WriteError(w http.ResponseWriter, e *awsapi.Error) {
	code, msg, status := e.Code, e.Message, e.Status
	switch code {
	case awsapi.CodeMissingAuth:
		code = "MissingAuthenticationToken"
	case awsapi.CodeUnknownKey:
		code, status = "InvalidClientTokenId", http.StatusForbidden
	case awsapi.CodeIncomplete:
		code = "IncompleteSignature"
	case awsapi.CodeBadSignature:
		code = "SignatureDoesNotMatch"
	case "ServerException":
		code, msg = "InternalFailure", "An internal error has occurred"
	}
	if status == 0 {
		status = http.StatusBadRequest
	}
	typ := "Sender"
	if status >= 500 {
		typ = "Receiver"
	}
	type xmlError struct {
		Type    string
		Code    string
		Message string
	}
	awsapi.WriteXML(w, status, struct {
		XMLName   xml.Name `xml:"ErrorResponse"`
		Xmlns     string   `xml:"xmlns,attr"`
		Error     xmlError
		RequestId string
	}{Xmlns: Namespace, Error: xmlError{typ, code, msg}, RequestId: w.Header().Get("X-Amzn-RequestId")})
}

func (s *Service) logger() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}
