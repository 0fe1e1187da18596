package iam

import (
	"encoding/json"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Request is what a policy is evaluated against: the action, the resource
// and the request's context keys (aws:SourceIp, aws:username, ...), by
// lower-case name. A key the request lacks is absent from Context.
type Request struct {
	Action, Resource string
	Context          map[string][]string
}

// condition is one key of one operator of a statement's Condition block.
type condition struct {
	op       string // the base operator, e.g. StringLike
	set      string // "", "ForAnyValue" or "ForAllValues"
	ifExists bool
	key      string // lower case: condition keys are case-insensitive
	values   []string
	vars     bool // resolve policy variables in values (see variables.go)
	// patterns replace values for the like operators once variables are
	// resolved (wildcards apart from literal '*' and '?'); expanded says
	// they do.
	patterns [][]rune
	expanded bool
}

// operators are the condition operators Gantry evaluates, by whether they
// are negated (they match when no value matches).
var operators = map[string]bool{
	"StringEquals": false, "StringNotEquals": true, "StringEqualsIgnoreCase": false, "StringNotEqualsIgnoreCase": true,
	"StringLike": false, "StringNotLike": true,
	"NumericEquals": false, "NumericNotEquals": true, "NumericLessThan": false, "NumericLessThanEquals": false,
	"NumericGreaterThan": false, "NumericGreaterThanEquals": false,
	"DateEquals": false, "DateNotEquals": true, "DateLessThan": false, "DateLessThanEquals": false,
	"DateGreaterThan": false, "DateGreaterThanEquals": false,
	"Bool": false, "BinaryEquals": false,
	"IpAddress": false, "NotIpAddress": true,
	"ArnEquals": false, "ArnLike": false, "ArnNotEquals": true, "ArnNotLike": true,
	"Null": false,
}

// parseConditions reads a Condition block, refusing operators Gantry does
// not know (AWS refuses them too) rather than ignoring them.
func parseConditions(raw json.RawMessage) ([]condition, error) {
	var block map[string]map[string]json.RawMessage
	if err := json.Unmarshal(raw, &block); err != nil {
		return nil, malformed("Syntax errors in policy: field Condition.")
	}
	var out []condition
	for name, keys := range block {
		c := condition{op: name}
		if set, rest, ok := strings.Cut(c.op, ":"); ok {
			if set != "ForAnyValue" && set != "ForAllValues" {
				return nil, malformed("Invalid Condition type : %s", name)
			}
			c.set, c.op = set, rest
		}
		if base, ok := strings.CutSuffix(c.op, "IfExists"); ok && base != "Null" {
			c.op, c.ifExists = base, true
		}
		if _, ok := operators[c.op]; !ok {
			return nil, malformed("Invalid Condition type : %s", name)
		}
		for key, v := range keys {
			vals, err := conditionValues(v)
			if err != nil || len(vals) == 0 {
				return nil, malformed("Syntax errors in policy: condition %s %s needs a value.", name, key)
			}
			if err := checkValues(c.op, vals); err != nil {
				return nil, malformed("Invalid value for condition %s %s: %s", name, key, err)
			}
			cc := c
			cc.key, cc.values = strings.ToLower(key), vals
			out = append(out, cc)
		}
	}
	// Map order is random; a stable order keeps evaluation reproducible.
	sort.Slice(out, func(i, j int) bool { return out[i].op+out[i].key < out[j].op+out[j].key })
	return out, nil
}

// conditionValues reads a value or a list of them; JSON numbers and
// booleans stand for their text, as IAM takes them.
func conditionValues(raw json.RawMessage) ([]string, error) {
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		list = []json.RawMessage{raw}
	}
	var out []string
	for _, r := range list {
		var v any
		if err := json.Unmarshal(r, &v); err != nil {
			return nil, err
		}
		switch x := v.(type) {
		case string:
			out = append(out, x)
		case bool:
			out = append(out, strconv.FormatBool(x))
		case float64:
			out = append(out, string(r))
		default:
			return nil, strconv.ErrSyntax
		}
	}
	return out, nil
}

func checkValues(op string, vals []string) error {
	for _, v := range vals {
		var ok bool
		switch {
		case strings.HasPrefix(op, "Numeric"):
			_, err := strconv.ParseFloat(v, 64)
			ok = err == nil
		case strings.HasPrefix(op, "Date"):
			_, ok = parseDate(v)
		case op == "IpAddress" || op == "NotIpAddress":
			_, ok = parsePrefix(v)
		case op == "Bool" || op == "Null":
			ok = strings.EqualFold(v, "true") || strings.EqualFold(v, "false")
		default:
			ok = true
		}
		if !ok {
			return strconv.ErrSyntax
		}
	}
	return nil
}

func parseDate(v string) (time.Time, bool) {
	for _, f := range []string{time.RFC3339Nano, "2006-01-02T15:04:05Z0700", "2006-01-02T15:04Z07:00", "2006-01-02"} {
		if t, err := time.Parse(f, v); err == nil {
			return t, true
		}
	}
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		return time.Unix(0, int64(n*1e9)).UTC(), true
	}
	return time.Time{}, false
}

func parsePrefix(v string) (netip.Prefix, bool) {
	if p, err := netip.ParsePrefix(v); err == nil {
		return p.Masked(), true
	}
	if a, err := netip.ParseAddr(v); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), true
	}
	return netip.Prefix{}, false
}

// holds reports whether every condition of a statement holds for req.
func holds(conds []condition, req Request) bool {
	for _, c := range conds {
		if c.vars {
			c = c.resolve(req.Context)
		}
		if !c.holds(req.Context[c.key]) {
			return false
		}
	}
	return true
}

// holds applies AWS's rules: a single-valued key matches when it matches
// any of the policy's values (a negated operator: none of them); a key the
// request lacks fails the condition, except for negated operators,
// ...IfExists and Null; ForAnyValue needs one request value to match,
// ForAllValues every one (and holds when there is none).
func (c condition) holds(got []string) bool {
	if c.op == "Null" {
		want := strings.EqualFold(c.values[0], "true")
		return (len(got) == 0) == want
	}
	negated := operators[c.op]
	switch c.set {
	case "ForAnyValue":
		for _, g := range got {
			if c.matches(g) != negated {
				return true
			}
		}
		return false
	case "ForAllValues":
		for _, g := range got {
			if c.matches(g) == negated {
				return false
			}
		}
		return true
	}
	if len(got) == 0 {
		return c.ifExists || negated
	}
	return c.matches(got[0]) != negated
}

// matches reports whether a request value equals (or is like) any of the
// policy's values, for the operator without its negation.
func (c condition) matches(got string) bool {
	if c.expanded {
		for _, p := range c.patterns {
			if matchExpanded(p, got) {
				return true
			}
		}
		return false
	}
	for _, want := range c.values {
		if c.match1(got, want) {
			return true
		}
	}
	return false
}

func (c condition) match1(got, want string) bool {
	switch c.op {
	case "StringEquals", "StringNotEquals", "BinaryEquals":
		return got == want
	case "StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase":
		return strings.EqualFold(got, want)
	case "StringLike", "StringNotLike", "ArnEquals", "ArnLike", "ArnNotEquals", "ArnNotLike":
		return Wildcard(want, got)
	case "Bool":
		return strings.EqualFold(got, want)
	case "IpAddress", "NotIpAddress":
		p, ok1 := parsePrefix(want)
		a, err := netip.ParseAddr(got)
		return ok1 && err == nil && p.Contains(a.Unmap())
	}
	if strings.HasPrefix(c.op, "Numeric") {
		g, err1 := strconv.ParseFloat(got, 64)
		w, err2 := strconv.ParseFloat(want, 64)
		if err1 != nil || err2 != nil {
			return false
		}
		return compare(c.op[len("Numeric"):], cmpFloat(g, w))
	}
	if strings.HasPrefix(c.op, "Date") {
		g, ok1 := parseDate(got)
		w, ok2 := parseDate(want)
		if !ok1 || !ok2 {
			return false
		}
		return compare(c.op[len("Date"):], g.Compare(w))
	}
	return false
}

// resolve is the condition with policy variables in its values resolved
// for a request, for the string and ARN operators (the only ones IAM
// resolves them for). A value whose variable has no value is dropped: it
// matches nothing.
func (c condition) resolve(ctx map[string][]string) condition {
	switch c.op {
	case "StringEquals", "StringNotEquals", "StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase":
		var vals []string
		for _, v := range c.values {
			if r, ok := resolveLiteral(v, ctx, true); ok {
				vals = append(vals, r)
			}
		}
		c.values = vals
	case "StringLike", "StringNotLike", "ArnEquals", "ArnLike", "ArnNotEquals", "ArnNotLike":
		c.patterns, c.expanded = nil, true
		for _, v := range c.values {
			if p, ok := expand(v, ctx, true, true); ok {
				c.patterns = append(c.patterns, p)
			}
		}
	}
	return c
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// compare reads a comparison suffix (Equals, NotEquals, LessThan, ...);
// NotEquals is Equals here, its negation applied by the caller.
func compare(how string, c int) bool {
	switch how {
	case "Equals", "NotEquals":
		return c == 0
	case "LessThan":
		return c < 0
	case "LessThanEquals":
		return c <= 0
	case "GreaterThan":
		return c > 0
	case "GreaterThanEquals":
		return c >= 0
	}
	return false
}

// principalContext is the global condition keys that describe a caller:
// arnKey is aws:PrincipalArn (for a role session, the role's ARN, as AWS
// gives it); username is set for IAM users only.
func principalContext(account, arnKey, userID, typ, username string) map[string][]string {
	ctx := map[string][]string{
		"aws:principalarn":     {arnKey},
		"aws:principalaccount": {account},
		"aws:userid":           {userID},
		"aws:principaltype":    {typ},
	}
	if username != "" {
		ctx["aws:username"] = []string{username}
	}
	return ctx
}
