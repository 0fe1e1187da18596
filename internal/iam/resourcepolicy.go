package iam

import (
	"encoding/json"
	"strings"

	"github.com/gantry-dev/gantry/internal/state"
)

// Resource-based policies (an EFS file system policy, ...): statements
// name the Principal they apply to, as a trust policy's do, and may name
// the Resource they are attached to, which an identity policy must.

// ParseResourcePolicy parses and checks a resource-based policy. The
// errors are MalformedPolicyDocument, like ParsePolicy's; the size limit
// is the caller's (EFS allows 20,000 characters).
func ParseResourcePolicy(doc string) (*Policy, error) {
	// Parsed as a trust policy without its Resource elements (which a trust
	// policy forbids), then given them back statement by statement.
	var top map[string]json.RawMessage
	if err := json.Unmarshal([]byte(doc), &top); err != nil {
		return nil, malformed("Syntax errors in policy.")
	}
	raw, ok := top["Statement"]
	if !ok {
		return nil, malformed("Missing required field Statement")
	}
	var list []json.RawMessage
	single := false
	if err := json.Unmarshal(raw, &list); err != nil {
		list, single = []json.RawMessage{raw}, true
	}
	type res struct {
		res, notRes       []string
		hasRes, hasNotRes bool
	}
	var resources []res
	stripped := make([]json.RawMessage, len(list))
	for i, r := range list {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(r, &fields); err != nil {
			return nil, malformed("Syntax errors in policy.")
		}
		var rs res
		var err error
		if v, ok := fields["Resource"]; ok {
			if rs.res, err = stringList(v); err != nil {
				return nil, malformed("Syntax errors in policy: field Resource.")
			}
			rs.hasRes = true
			delete(fields, "Resource")
		}
		if v, ok := fields["NotResource"]; ok {
			if rs.notRes, err = stringList(v); err != nil {
				return nil, malformed("Syntax errors in policy: field NotResource.")
			}
			rs.hasNotRes = true
			delete(fields, "NotResource")
		}
		if rs.hasRes && rs.hasNotRes {
			return nil, malformed("Statement cannot have both Resource and NotResource.")
		}
		for _, r := range append(append([]string{}, rs.res...), rs.notRes...) {
			if r != "*" && !strings.HasPrefix(r, "arn:") {
				return nil, malformed("Resource %s must be in ARN format or \"*\".", r)
			}
		}
		if _, ok := fields["Principal"]; !ok {
			return nil, malformed("Policy statement must contain a principal.")
		}
		resources = append(resources, rs)
		if stripped[i], err = json.Marshal(fields); err != nil {
			return nil, malformed("Syntax errors in policy.")
		}
	}
	if single {
		top["Statement"] = stripped[0]
	} else {
		b, err := json.Marshal(stripped)
		if err != nil {
			return nil, malformed("Syntax errors in policy.")
		}
		top["Statement"] = b
	}
	b, err := json.Marshal(top)
	if err != nil {
		return nil, malformed("Syntax errors in policy.")
	}
	p, err := parsePolicy(string(b), true)
	if err != nil {
		return nil, err
	}
	for i := range p.Statement {
		st, rs := &p.Statement[i], resources[i]
		st.Resource, st.NotResource, st.hasRes, st.hasNotRes = rs.res, rs.notRes, rs.hasRes, rs.hasNotRes
	}
	return p, nil
}

// EvaluateResource applies a resource-based policy to a request made by
// principal (an IAM ARN of account; "" for an anonymous caller, whom only
// a Principal of "*" names): an explicit Deny wins, then any Allow.
func (p *Policy) EvaluateResource(principal, account string, req Request) Decision {
	d := ImplicitDeny
	for i := range p.Statement {
		st := &p.Statement[i]
		if !st.matches(req.Action, req.Resource, req.Context) || !holds(st.Conditions, req) {
			continue
		}
		if principal == "" {
			if !anonymousMatches(st) {
				continue
			}
		} else if !st.principalMatches("AWS", principal, account) {
			continue
		}
		if st.Effect == "Deny" {
			return ExplicitDeny
		}
		d = Allow
	}
	return d
}

// anonymousMatches: only "*" (or {"AWS": "*"}) names an anonymous caller.
func anonymousMatches(st *Statement) bool {
	if _, ok := st.Principal["*"]; ok {
		return true
	}
	for _, v := range st.Principal["AWS"] {
		if v == "*" {
			return true
		}
	}
	return false
}

// RolePoliciesTx reads, in another service's transaction, the role named
// by roleARN and its inline (identity-based) policies, parsed; a policy
// that no longer parses is left out, as Authorize does. nil, nil when
// there is no such role.
func RolePoliciesTx(tx state.Tx, roleARN string) (*Role, []*Policy, error) {
	m := roleARNRe.FindStringSubmatch(roleARN)
	if m == nil {
		return nil, nil, nil
	}
	var ro Role
	ok, err := tx.Get(kindRole, userKey(m[1], m[2]), &ro)
	if err != nil || !ok {
		return nil, nil, err
	}
	var pols []*Policy
	for _, d := range ro.Policies {
		if p, err := ParsePolicy(d, false); err == nil {
			pols = append(pols, p)
		}
	}
	return &ro, pols, nil
}
