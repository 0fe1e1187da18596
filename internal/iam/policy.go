package iam

import (
	"encoding/json"

	"fmt"
	"github.com/gantry-dev/gantry/internal/awsapi"
	"strings"
)

// Policy is a parsed IAM policy document.
type Policy struct {
	Version   string
	Statement []Statement
}

// Statement is one statement. Principal is only for trust policies.
type Statement struct {
	Sid         string
	Effect      string
	Action      []string
	NotAction   []string
	Resource    []string
	NotResource []string
	Principal   map[string][]string // "*" becomes {"*": ["*"]}
	Conditions  []condition
	hasAction   bool
	hasNotAct   bool
	hasRes      bool
	hasNotRes   bool
	// vars: policy variables are resolved (Version 2012-10-17).
	vars bool
}

// MaxPolicySize bounds a policy document, as IAM does for role policies.
const MaxPolicySize = 10240

func malformed(format string, args ...any) error {
	return awsapi.Errorf("MalformedPolicyDocument", format, args...)
}

// stringList reads a JSON string or array of strings.
func stringList(raw json.RawMessage) ([]string, error) {
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, err
	}
	return many, nil
}

// ParsePolicy parses and checks a policy. trust selects the rules of a
// role's trust policy (Principal required, Resource not) over those of an
// identity-based policy (Resource required, Principal forbidden).
func ParsePolicy(doc string, trust bool) (*Policy, error) {
	if len(doc) > MaxPolicySize {
		return nil, &awsapi.Error{Code: "LimitExceeded", Message: fmt.Sprintf("Maximum policy size of %d bytes exceeded.", MaxPolicySize), Status: 409}
	}
	return parsePolicy(doc, trust)
}

// parsePolicy is ParsePolicy without IAM's size limit (resource policies
// have their services' own).
func parsePolicy(doc string, trust bool) (*Policy, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal([]byte(doc), &top); err != nil {
		return nil, malformed("Syntax errors in policy.")
	}
	p := &Policy{}
	for k, v := range top {
		switch k {
		case "Version":
			if err := json.Unmarshal(v, &p.Version); err != nil || (p.Version != "2012-10-17" && p.Version != "2008-10-17") {
				return nil, malformed("The policy must contain a valid version string")
			}
		case "Id":
		case "Statement":
			var list []json.RawMessage
			if err := json.Unmarshal(v, &list); err != nil {
				list = []json.RawMessage{v}
			}
			for _, raw := range list {
				st, err := parseStatement(raw, trust)
				if err != nil {
					return nil, err
				}
				p.Statement = append(p.Statement, st)
			}
		default:
			return nil, malformed("Policy document should not specify a field named %q.", k)
		}
	}
	if len(p.Statement) == 0 {
		return nil, malformed("Missing required field Statement")
	}
	// Known only now: JSON objects have no order.
	for i := range p.Statement {
		st := &p.Statement[i]
		st.vars = p.Version == "2012-10-17"
		for j := range st.Conditions {
			st.Conditions[j].vars = st.vars
		}
	}
	return p, nil
}

func parseStatement(raw json.RawMessage, trust bool) (Statement, error) {
	var st Statement
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return st, malformed("Syntax errors in policy.")
	}
	for k, v := range fields {
		var err error
		switch k {
		case "Sid":
			err = json.Unmarshal(v, &st.Sid)
		case "Effect":
			err = json.Unmarshal(v, &st.Effect)
		case "Action":
			st.Action, err = stringList(v)
			st.hasAction = true
		case "NotAction":
			st.NotAction, err = stringList(v)
			st.hasNotAct = true
		case "Resource":
			st.Resource, err = stringList(v)
			st.hasRes = true
		case "NotResource":
			st.NotResource, err = stringList(v)
			st.hasNotRes = true
		case "Principal", "NotPrincipal":
			if k == "NotPrincipal" {
				return st, malformed("NotPrincipal is not supported.")
			}
			st.Principal, err = parsePrincipal(v)
		case "Condition":
			var cerr error
			if st.Conditions, cerr = parseConditions(v); cerr != nil {
				return st, cerr
			}
		default:
			return st, malformed("Statement has an unknown field %q.", k)
		}
		if err != nil {
			return st, malformed("Syntax errors in policy: field %s.", k)
		}
	}
	if st.Effect != "Allow" && st.Effect != "Deny" {
		return st, malformed("Invalid effect: %s", st.Effect)
	}
	if st.hasAction == st.hasNotAct {
		return st, malformed("Policy statement must contain actions.")
	}
	for _, a := range append(append([]string{}, st.Action...), st.NotAction...) {
		if a != "*" && !strings.Contains(a, ":") {
			return st, malformed("Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.")
		}
	}
	if trust {
		if st.Principal == nil {
			return st, malformed("AssumeRolepolicy contained an invalid principal element.")
		}
		if st.hasRes || st.hasNotRes {
			return st, malformed("Has prohibited field Resource.")
		}
	} else {
		if st.Principal != nil {
			return st, malformed("Policy document should not specify a principal.")
		}
		if st.hasRes == st.hasNotRes {
			return st, malformed("Policy statement must contain resources.")
		}
		for _, r := range append(append([]string{}, st.Resource...), st.NotResource...) {
			if r != "*" && !strings.HasPrefix(r, "arn:") {
				return st, malformed("Resource %s must be in ARN format or \"*\".", r)
			}
		}
	}
	return st, nil
}

func parsePrincipal(raw json.RawMessage) (map[string][]string, error) {
	var star string
	if err := json.Unmarshal(raw, &star); err == nil {
		if star != "*" {
			return nil, fmt.Errorf("principal")
		}
		return map[string][]string{"*": {"*"}}, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for k, v := range m {
		if k != "AWS" && k != "Service" && k != "Federated" && k != "CanonicalUser" {
			return nil, fmt.Errorf("principal type")
		}
		l, err := stringList(v)
		if err != nil {
			return nil, err
		}
		out[k] = l
	}
	return out, nil
}

// Decision is the outcome of evaluating policies for one request.
type Decision int

const (
	ImplicitDeny Decision = iota // no statement allows: the default
	Allow
	ExplicitDeny // a Deny statement matches: wins over any Allow
)

func (d Decision) String() string {
	return [...]string{"ImplicitDeny", "Allow", "ExplicitDeny"}[d]
}

// Evaluate applies identity-based policies to action on resource for a
// request with no context keys (see EvaluateRequest).
func Evaluate(policies []*Policy, action, resource string) Decision {
	return EvaluateRequest(policies, Request{Action: action, Resource: resource})
}

// EvaluateRequest applies identity-based policies to a request, following
// AWS's evaluation logic for a single account: an explicit Deny in any
// policy wins, otherwise any Allow allows, otherwise the request is denied
// by default. A statement applies only when all its conditions hold.
func EvaluateRequest(policies []*Policy, req Request) Decision {
	d := ImplicitDeny
	for _, p := range policies {
		for i := range p.Statement {
			st := &p.Statement[i]
			if !st.matches(req.Action, req.Resource, req.Context) || !holds(st.Conditions, req) {
				continue
			}
			if st.Effect == "Deny" {
				return ExplicitDeny
			}
			d = Allow
		}
	}
	return d
}

func (st *Statement) matches(action, resource string, ctx map[string][]string) bool {
	if st.hasAction && !anyMatch(st.Action, action, true) {
		return false
	}
	if st.hasNotAct && anyMatch(st.NotAction, action, true) {
		return false
	}
	if st.hasRes && !st.anyResource(st.Resource, resource, ctx) {
		return false
	}
	if st.hasNotRes && st.anyResource(st.NotResource, resource, ctx) {
		return false
	}
	return true
}

// anyResource matches a resource against Resource or NotResource
// patterns, case-sensitively, with their policy variables resolved.
func (st *Statement) anyResource(patterns []string, resource string, ctx map[string][]string) bool {
	for _, p := range patterns {
		if matchPolicyString(p, resource, ctx, st.vars) {
			return true
		}
	}
	return false
}

func anyMatch(patterns []string, s string, fold bool) bool {
	for _, p := range patterns {
		if fold {
			if Wildcard(strings.ToLower(p), strings.ToLower(s)) {
				return true
			}
		} else if Wildcard(p, s) {
			return true
		}
	}
	return false
}

// Wildcard matches s against an IAM pattern: '*' any run of characters
// (also across ':' and '/'), '?' any one character.
func Wildcard(pattern, s string) bool {
	// Iterative glob with backtracking on the last '*'.
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && (pattern[p] == '?' || pattern[p] == s[i]):
			p++
			i++
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// Trusts reports whether a trust policy lets principal (an AWS ARN of
// account, or a service name when service is set) perform action, with
// the context keys the request carries (ctx may be nil).
func (p *Policy) Trusts(principalType, principal, account, action string, ctx map[string][]string) bool {
	allowed := false
	req := Request{Action: action, Resource: "*", Context: ctx}
	for _, st := range p.Statement {
		if !st.matches(action, "*", ctx) || !st.principalMatches(principalType, principal, account) || !holds(st.Conditions, req) {
			continue
		}
		if st.Effect == "Deny" {
			return false
		}
		allowed = true
	}
	return allowed
}

func (st *Statement) principalMatches(typ, principal, account string) bool {
	if _, ok := st.Principal["*"]; ok {
		return true
	}
	for _, v := range st.Principal[typ] {
		switch {
		case v == "*" || v == principal:
			return true
		case typ == "AWS" && (v == account || v == "arn:aws:iam::"+account+":root"):
			return true
		}
	}
	return false
}

// TrustsService reports whether a role's trust policy lets a service (such
// as ecs-tasks.amazonaws.com) assume it: task roles must.
func (r *Role) TrustsService(service string, ctx map[string][]string) bool {
	p, err := ParsePolicy(r.AssumeRolePolicy, true)
	return err == nil && p.Trusts("Service", service, "", "sts:AssumeRole", ctx)
}
