// Package ec2 serves the subset of the EC2 Query API that Fargate tasks
// live in: VPCs, subnets, security groups and their rules, tags, and the
// tasks' network interfaces (read-only, derived from the ECS task records).
// It keeps the default VPC that every account starts with. The task
// controller and the network enforcement read VPCs, subnets and security
// groups through LookupVPC, LookupSubnet, LookupSecurityGroup,
// SecurityGroupsOfVPC and DefaultSubnets, and learn of changes through
// Service.OnChange.
package ec2

import (
	"context"
	"encoding/base64"
	"encoding/xml"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/state"
)

// Namespace is the EC2 API version's XML namespace, which clients expect on
// every response.
const Namespace = "http://ec2.amazonaws.com/doc/2016-11-15/"

// Service answers EC2 Query requests.
type Service struct {
	Store state.Store
	// DefaultVPCCIDR is the range of default VPCs made on first use in a
	// region (empty: AWS's 172.31.0.0/16).
	DefaultVPCCIDR string
	// OnChange, when set, is called after every committed write to VPCs
	// (ChangeVPC), subnets (ChangeSubnet) or security groups and their
	// rules (ChangeSecurityGroup), so enforcement can follow within a
	// second. It must not block.
	OnChange func(kind string)
}

// Kinds passed to Service.OnChange.
const (
	ChangeVPC           = "vpc"
	ChangeSubnet        = "subnet"
	ChangeSecurityGroup = "security-group"
)

func (s *Service) changed(kind string) {
	if s.OnChange != nil {
		s.OnChange(kind)
	}
}

// request is one Query call: its parameters and the caller's scope.
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

type action func(s *Service, r *request) (response, error)

var actions = map[string]action{
	"DescribeVpcs":              (*Service).describeVpcs,
	"DescribeSubnets":           (*Service).describeSubnets,
	"DescribeSecurityGroups":    (*Service).describeSecurityGroups,
	"DescribeAvailabilityZones": (*Service).describeAvailabilityZones,
	"DescribeAccountAttributes": (*Service).describeAccountAttributes,

	"CreateVpc":                     (*Service).createVpc,
	"DeleteVpc":                     (*Service).deleteVpc,
	"CreateSubnet":                  (*Service).createSubnet,
	"DeleteSubnet":                  (*Service).deleteSubnet,
	"CreateSecurityGroup":           (*Service).createSecurityGroup,
	"DeleteSecurityGroup":           (*Service).deleteSecurityGroup,
	"AuthorizeSecurityGroupIngress": (*Service).authorizeIngress,
	"AuthorizeSecurityGroupEgress":  (*Service).authorizeEgress,
	"RevokeSecurityGroupIngress":    (*Service).revokeIngress,
	"RevokeSecurityGroupEgress":     (*Service).revokeEgress,
	"DescribeSecurityGroupRules":    (*Service).describeSecurityGroupRules,
	"DescribeNetworkInterfaces":     (*Service).describeNetworkInterfaces,
	"CreateTags":                    (*Service).createTags,
	"DeleteTags":                    (*Service).deleteTags,
	"DescribeTags":                  (*Service).describeTags,
}

// response is what every action's output embeds: EC2 wraps each result in
// <ActionResponse xmlns=...> with a requestId.
type response interface{ header() *ResponseHeader }

// ResponseHeader is exported only because encoding/xml cannot marshal an
// embedded unexported struct.
type ResponseHeader struct {
	XMLName   xml.Name
	Xmlns     string `xml:"xmlns,attr"`
	RequestID string `xml:"requestId"`
}

func (h *ResponseHeader) header() *ResponseHeader { return h }

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
	// A region other than the server's gets its default VPC on first use,
	// as every AWS region of an account has one.
	if err := EnsureDefaultVPC(r.Context(), s.Store, req.account, req.region, s.DefaultVPCCIDR); err != nil {
		s.WriteError(w, awsapi.ServerError(err))
		return
	}
	if v := req.param("DryRun"); v == "true" {
		s.WriteError(w, &awsapi.Error{Code: "DryRunOperation", Message: "Request would have succeeded, but DryRun flag is set.", Status: http.StatusPreconditionFailed})
		return
	}
	out, err := awsapi.Guard(func() (response, error) { return fn(s, req) })
	if err != nil {
		s.WriteError(w, awsapi.AsError(err))
		return
	}
	h := out.header()
	h.XMLName = xml.Name{Local: name + "Response"}
	h.Xmlns = Namespace
	h.RequestID = w.Header().Get("X-Amzn-RequestId")
	awsapi.WriteXML(w, http.StatusOK, out)
}

type errorResponse struct {
	XMLName   xml.Name `xml:"Response"`
	Errors    []xmlErr `xml:"Errors>Error"`
	RequestID string   `xml:"RequestID"`
}

type xmlErr struct {
	Code    string `xml:"Code"`
	Message string `xml:"Message"`
}

// WriteError writes e in EC2's error XML, renaming the SigV4 failures to the
// codes EC2 uses for them.
func (s *Service) WriteError(w http.ResponseWriter, e *awsapi.Error) {
	code, msg, status := e.Code, e.Message, e.Status
	switch code {
	case awsapi.CodeMissingAuth:
		code, msg = "MissingAuthenticationToken", "Request is missing Authentication Token"
	case awsapi.CodeUnknownKey:
		code, msg, status = "AuthFailure", "AWS was not able to validate the provided access credentials", http.StatusUnauthorized
	case awsapi.CodeIncomplete:
		code = "IncompleteSignature"
	case awsapi.CodeBadSignature:
		code = "SignatureDoesNotMatch"
		if strings.HasPrefix(msg, "Signature expired") || strings.HasPrefix(msg, "Signature not yet current") {
			code = "RequestExpired"
		}
	case "ServerException":
		code, msg = "InternalError", "An internal error has occurred"
	}
	if status == 0 {
		status = http.StatusBadRequest
	}
	awsapi.WriteXML(w, status, errorResponse{
		Errors:    []xmlErr{{Code: code, Message: msg}},
		RequestID: w.Header().Get("X-Amzn-RequestId"),
	})
}

// list returns the values of a flattened Query list (Name.1, Name.2, ...)
// in index order.
func (r *request) list(name string) []string {
	type item struct {
		n int
		v string
	}
	var items []item
	for k, v := range r.form {
		rest, ok := strings.CutPrefix(k, name+".")
		if !ok || len(v) == 0 {
			continue
		}
		if n, err := strconv.Atoi(rest); err == nil {
			items = append(items, item{n, v[0]})
		}
	}
	sort.Slice(items, func(i, j int) bool { return items[i].n < items[j].n })
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.v
	}
	return out
}

// has reports whether the request carries name at all (an empty value
// counts: EC2 tells "" from absent for tag values).
func (r *request) has(name string) bool {
	_, ok := r.form[name]
	return ok
}

// required returns a parameter that must be present and non-empty.
func (r *request) required(name string) (string, error) {
	v := r.param(name)
	if v == "" {
		return "", awsapi.Errorf("MissingParameter", "The request must contain the parameter %s", name)
	}
	return v, nil
}

// intParam parses an optional integer parameter; nil when absent.
func (r *request) intParam(name string) (*int32, error) {
	if !r.has(name) {
		return nil, nil
	}
	v := r.param(name)
	n, err := strconv.ParseInt(v, 10, 32)
	if err != nil {
		return nil, awsapi.Errorf("InvalidParameterValue", "Value (%s) for parameter %s is invalid. Expecting an integer.", v, name)
	}
	n32 := int32(n)
	return &n32, nil
}

// indexes returns the N of every "prefix.N.…" or "prefix.N" key in order,
// the members of a flattened list of structures.
func (r *request) indexes(prefix string) []int {
	var out []int
	for k := range r.form {
		rest, ok := strings.CutPrefix(k, prefix+".")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(rest, ".")
		if i, err := strconv.Atoi(n); err == nil && i >= 0 && !slices.Contains(out, i) {
			out = append(out, i)
		}
	}
	slices.Sort(out)
	return out
}

// filter is one Filter.N: a name and the values any of which may match.
type filter struct {
	name   string
	values []*regexp.Regexp
}

// filters parses Filter.N.Name / Filter.N.Value.M. Values may use the * and
// ? wildcards, as EC2 documents.
func (r *request) filters() []filter {
	var out []filter
	for k, v := range r.form {
		rest, ok := strings.CutPrefix(k, "Filter.")
		if !ok || !strings.HasSuffix(rest, ".Name") || len(v) == 0 {
			continue
		}
		n := strings.TrimSuffix(rest, ".Name")
		if _, err := strconv.Atoi(n); err != nil {
			continue
		}
		f := filter{name: v[0]}
		for _, val := range r.list("Filter." + n + ".Value") {
			f.values = append(f.values, wildcard(val))
		}
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func wildcard(pattern string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for _, c := range pattern {
		switch c {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

// attrs gives a resource's values for a filter name; known is false for a
// filter the resource type does not have.
type attrs func(name string) (values []string, known bool)

// matchAll reports whether a resource passes every filter; an unknown filter
// name is the error EC2 gives for it.
func matchAll(fs []filter, get attrs) (bool, error) {
	for _, f := range fs {
		vals, known := get(f.name)
		if !known {
			return false, awsapi.Errorf("InvalidParameterValue", "The filter '%s' is invalid", f.name)
		}
		if !slices.ContainsFunc(f.values, func(re *regexp.Regexp) bool {
			return slices.ContainsFunc(vals, re.MatchString)
		}) {
			return false, nil
		}
	}
	return true, nil
}

// tagAttrs answers the tag filters every taggable resource has.
func tagAttrs(tags []Tag, name string) ([]string, bool) {
	if key, ok := strings.CutPrefix(name, "tag:"); ok {
		for _, t := range tags {
			if t.Key == key {
				return []string{t.Value}, true
			}
		}
		return nil, true
	}
	var out []string
	switch name {
	case "tag-key":
		for _, t := range tags {
			out = append(out, t.Key)
		}
	case "tag-value":
		for _, t := range tags {
			out = append(out, t.Value)
		}
	default:
		return nil, false
	}
	return out, true
}

func boolString(b bool) string { return strconv.FormatBool(b) }

// paging validates MaxResults and NextToken for a paginated describe call;
// ids names the id-list parameter that cannot be combined with MaxResults.
type paging struct {
	max   int
	after string
}

func (r *request) paging(ids string, haveIDs bool) (paging, error) {
	var p paging
	if v := r.param("MaxResults"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return p, awsapi.Errorf("InvalidParameterValue", "Value (%s) for parameter maxResults is invalid. Expecting an integer.", v)
		}
		if haveIDs {
			return p, awsapi.Errorf("InvalidParameterCombination", "The parameter %s cannot be used with the parameter maxResults", ids)
		}
		if n < 5 || n > 1000 {
			return p, awsapi.Errorf("InvalidParameterValue", "Value ( %d ) for parameter maxResults is invalid. Expecting a value between 5 and 1000.", n)
		}
		p.max = n
	}
	if tok := r.param("NextToken"); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || len(b) == 0 {
			return p, awsapi.Errorf("InvalidNextToken", "The token '%s' is invalid", tok)
		}
		p.after = string(b)
	}
	return p, nil
}

// page cuts items (sorted by id) after the token, at most max of them, and
// returns the token for the rest.
func page[T any](items []T, id func(T) string, p paging) ([]T, string) {
	if p.after != "" {
		i := sort.Search(len(items), func(i int) bool { return id(items[i]) > p.after })
		items = items[i:]
	}
	if p.max > 0 && len(items) > p.max {
		items = items[:p.max]
		return items, base64.RawURLEncoding.EncodeToString([]byte(id(items[len(items)-1])))
	}
	return items, ""
}

// notFound is EC2's error for ids that do not exist, naming all of them.
func notFound(code, what string, ids []string) error {
	if len(ids) == 1 {
		return awsapi.Errorf(code, "The %s '%s' does not exist", what, ids[0])
	}
	return awsapi.Errorf(code, "The %ss '%s' do not exist", what, strings.Join(ids, ", "))
}

// checkIDs rejects ids without the resource's prefix, as EC2 does before
// looking them up.
func checkIDs(code, prefix string, ids []string) error {
	for _, id := range ids {
		if !strings.HasPrefix(id, prefix+"-") {
			return awsapi.Errorf(code, "Invalid id: \"%s\" (expecting \"%s-...\")", id, prefix)
		}
	}
	return nil
}
