package elbv2

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/state"
)

// Listener rules: conditions on the request (path, host, headers, method,
// source address) in priority order, each with one action, before the
// listener's default action. Stored one document per rule, keyed by ARN
// (...:listener-rule/app/LB/LBID/LISTENERID/RULEID), so a listener's rules
// are a key prefix.

const kindRule = "elbv2.rule" // ARN -> ruleRecord

const (
	maxRulesPerListener = 100
	maxConditionValues  = 5
	maxWeightedGroups   = 5
)

type conditionRecord struct {
	Field string `json:"field"`
	// Header is http-header's header name.
	Header string   `json:"header,omitempty"`
	Values []string `json:"values"`
}

type weightedGroup struct {
	ARN    string `json:"arn"`
	Weight int32  `json:"weight"`
}

type fixedResponse struct {
	StatusCode  string `json:"statusCode"`
	ContentType string `json:"contentType,omitempty"`
	MessageBody string `json:"messageBody,omitempty"`
}

type ruleRecord struct {
	ARN         string            `json:"arn"`
	ListenerARN string            `json:"listenerArn"`
	Priority    int32             `json:"priority"`
	Conditions  []conditionRecord `json:"conditions"`
	Actions     []actionRecord    `json:"actions"`
	Tags        []tag             `json:"tags,omitempty"`
}

// groups are the target groups a forward action sends to, with weights.
func (a *actionRecord) groups() []weightedGroup {
	if len(a.Forward) > 0 {
		return a.Forward
	}
	if a.TargetGroupARN != "" {
		return []weightedGroup{{ARN: a.TargetGroupARN, Weight: 1}}
	}
	return nil
}

func rulePrefix(listenerARN string) string {
	return strings.Replace(listenerARN, ":listener/", ":listener-rule/", 1) + "/"
}

// listenerOfRule is the listener a rule ARN belongs to.
func listenerOfRule(ruleARN string) string {
	s := strings.Replace(ruleARN, ":listener-rule/", ":listener/", 1)
	if i := strings.LastIndex(s, "/"); i > 0 {
		return s[:i]
	}
	return s
}

// defaultRuleARN is the ARN of a listener's default rule: derived from the
// listener's, so it needs no document and stays the same across restarts.
func defaultRuleARN(listenerARN string) string {
	h := sha256.Sum256([]byte(listenerARN))
	return rulePrefix(listenerARN) + hex.EncodeToString(h[:8])
}

// ---- parsing ----

var (
	statusCodeRE  = regexp.MustCompile(`^[245]\d\d$`)
	pathPatternRE = regexp.MustCompile(`^[A-Za-z0-9_\-.$/~"'@:+&*?]+$`)
	hostPatternRE = regexp.MustCompile(`^[A-Za-z0-9\-.*?]+$`)
	methodRE      = regexp.MustCompile(`^[A-Z_\-*?]+$`)
	headerNameRE  = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+\\-.^_`|~]+$")
)

var contentTypes = []string{"text/plain", "text/css", "text/html", "application/javascript", "application/json"}

// actions parses a Query list of actions (DefaultActions or Actions).
// Gantry's actions are terminal ones: forward (one group, or several with
// weights) and fixed-response; a list holds exactly one.
func (r *request) actions(name string) ([]actionRecord, error) {
	var acts []actionRecord
	for _, p := range r.structs(name) {
		field := lowerFirst(name) + "." + strings.TrimPrefix(strings.TrimSuffix(p, "."), name+".member.")
		typ := r.param(p + "Type")
		a := actionRecord{Type: typ}
		var err error
		if a.Order, err = r.intParam(p+"Order", 0, 1, 50000); err != nil {
			return nil, err
		}
		switch typ {
		case "forward":
			tg := r.param(p + "TargetGroupArn")
			for _, q := range r.structs(p + "ForwardConfig.TargetGroups") {
				arn := r.param(q + "TargetGroupArn")
				if arn == "" {
					return nil, validation("A target group ARN must be specified for each target group of a forward action")
				}
				w, err := r.intParam(q+"Weight", 1, 0, 999)
				if err != nil {
					return nil, err
				}
				if slices.ContainsFunc(a.Forward, func(g weightedGroup) bool { return g.ARN == arn }) {
					return nil, validation("Target group '%s' is specified more than once in a forward action", arn)
				}
				a.Forward = append(a.Forward, weightedGroup{ARN: arn, Weight: w})
			}
			switch {
			case tg == "" && len(a.Forward) == 0:
				return nil, validation("A target group ARN must be specified for a forward action (%s)", field)
			case tg != "" && len(a.Forward) > 0 && (len(a.Forward) != 1 || a.Forward[0].ARN != tg):
				return nil, awsapi.Errorf("InvalidLoadBalancerAction", "You cannot specify both a top-level target group ARN and a different ForwardConfig target group")
			case len(a.Forward) > maxWeightedGroups:
				return nil, awsapi.Errorf("TooManyTargetGroups", "A forward action can have at most %d target groups", maxWeightedGroups)
			}
			if len(a.Forward) == 1 && tg == "" {
				tg = a.Forward[0].ARN
			}
			if len(a.Forward) <= 1 {
				a.Forward = nil
			}
			if len(a.Forward) == 0 {
				a.TargetGroupARN = tg
			}
		case "fixed-response":
			fr := &fixedResponse{
				StatusCode:  r.param(p + "FixedResponseConfig.StatusCode"),
				ContentType: r.param(p + "FixedResponseConfig.ContentType"),
				MessageBody: r.param(p + "FixedResponseConfig.MessageBody"),
			}
			if fr.StatusCode == "" {
				return nil, validation("1 validation error detected: Value null at '%s.fixedResponseConfig.statusCode' failed to satisfy constraint: Member must not be null", field)
			}
			if !statusCodeRE.MatchString(fr.StatusCode) {
				return nil, validation("1 validation error detected: Value '%s' at '%s.fixedResponseConfig.statusCode' failed to satisfy constraint: Member must satisfy regular expression pattern: ^(2|4|5)\\d\\d$", fr.StatusCode, field)
			}
			if fr.ContentType != "" && !slices.Contains(contentTypes, fr.ContentType) {
				return nil, validation("1 validation error detected: Value '%s' at '%s.fixedResponseConfig.contentType' failed to satisfy constraint: Member must be one of %s", fr.ContentType, field, strings.Join(contentTypes, ", "))
			}
			if len(fr.MessageBody) > 1024 {
				return nil, validation("1 validation error detected: Value at '%s.fixedResponseConfig.messageBody' failed to satisfy constraint: Member must have length less than or equal to 1024", field)
			}
			a.Fixed = fr
		case "":
			return nil, validation("1 validation error detected: Value null at '%s.type' failed to satisfy constraint: Member must not be null", field)
		case "redirect", "authenticate-oidc", "authenticate-cognito", "jwt-validation":
			return nil, awsapi.Errorf("InvalidLoadBalancerAction", "Action type '%s' is not supported by Gantry; use 'forward' or 'fixed-response'", typ)
		default:
			return nil, validation("1 validation error detected: Value '%s' at '%s.type' failed to satisfy constraint: Member must satisfy enum value set: [redirect, forward, authenticate-cognito, fixed-response, authenticate-oidc, jwt-validation]", typ, field)
		}
		acts = append(acts, a)
	}
	if len(acts) == 0 {
		return nil, validation("1 validation error detected: Value null at '%s' failed to satisfy constraint: Member must not be null", lowerFirst(name))
	}
	if len(acts) > 1 {
		return nil, awsapi.Errorf("TooManyActions", "Gantry's rules and listeners take one action: a forward or a fixed-response")
	}
	return acts, nil
}

// conditions parses a rule's Conditions: the old Values form or the
// *Config forms, as the CLI sends either.
func (r *request) conditions() ([]conditionRecord, error) {
	var out []conditionRecord
	total := 0
	for _, p := range r.structs("Conditions") {
		field := r.param(p + "Field")
		c := conditionRecord{Field: field}
		legacy := r.list(p + "Values")
		var cfg []string
		switch field {
		case "path-pattern":
			cfg = r.list(p + "PathPatternConfig.Values")
		case "host-header":
			cfg = r.list(p + "HostHeaderConfig.Values")
		case "http-request-method":
			cfg = r.list(p + "HttpRequestMethodConfig.Values")
		case "source-ip":
			cfg = r.list(p + "SourceIpConfig.Values")
		case "http-header":
			c.Header = r.param(p + "HttpHeaderConfig.HttpHeaderName")
			cfg = r.list(p + "HttpHeaderConfig.Values")
			if c.Header == "" || !headerNameRE.MatchString(c.Header) || len(c.Header) > 40 {
				return nil, validation("An http-header condition needs a valid HttpHeaderName (at most 40 characters)")
			}
		case "query-string":
			return nil, validation("Condition field 'query-string' is not supported by Gantry; use path-pattern, host-header, http-header, http-request-method or source-ip")
		case "":
			return nil, validation("A condition field must be specified")
		default:
			return nil, validation("Condition field '%s' must be one of [path-pattern, host-header, http-header, http-request-method, query-string, source-ip]", field)
		}
		if len(r.list(p+"PathPatternConfig.RegexValues"))+len(r.list(p+"HostHeaderConfig.RegexValues"))+len(r.list(p+"HttpHeaderConfig.RegexValues")) > 0 {
			return nil, validation("Regular expression conditions (RegexValues) are not supported by Gantry")
		}
		switch {
		case len(legacy) > 0 && len(cfg) > 0:
			return nil, validation("You cannot specify both 'Values' and a condition configuration for condition field '%s'", field)
		case len(legacy) > 0:
			if field != "path-pattern" && field != "host-header" {
				return nil, validation("Condition field '%s' takes its values in its configuration, not 'Values'", field)
			}
			c.Values = legacy
		default:
			c.Values = cfg
		}
		if len(c.Values) == 0 {
			return nil, validation("A condition value must be specified for condition field '%s'", field)
		}
		for _, v := range c.Values {
			if err := checkConditionValue(field, v); err != nil {
				return nil, err
			}
		}
		if field != "http-header" && slices.ContainsFunc(out, func(o conditionRecord) bool { return o.Field == field }) {
			return nil, validation("Condition field '%s' can be specified only once per rule", field)
		}
		total += len(c.Values)
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, validation("1 validation error detected: Value null at 'conditions' failed to satisfy constraint: Member must not be null")
	}
	if total > maxConditionValues {
		return nil, validation("A rule can only have '%d' condition values", maxConditionValues)
	}
	return out, nil
}

func checkConditionValue(field, v string) error {
	if v == "" || len(v) > 128 {
		return validation("Condition value '%s' for field '%s' must be between 1 and 128 characters", v, field)
	}
	ok := true
	switch field {
	case "path-pattern":
		ok = pathPatternRE.MatchString(v)
	case "host-header":
		ok = hostPatternRE.MatchString(v)
	case "http-request-method":
		ok = methodRE.MatchString(v)
	case "source-ip":
		_, err := netip.ParsePrefix(v)
		ok = err == nil
	}
	if !ok {
		return validation("Condition value '%s' is not valid for condition field '%s'", v, field)
	}
	return nil
}

// ---- matching ----

// wildcard matches s against a pattern where '*' is any run of characters
// and '?' exactly one, as ALB conditions compare.
func wildcard(pattern, s string) bool {
	px, sx := 0, 0
	star, mark := -1, 0
	for sx < len(s) {
		switch {
		case px < len(pattern) && (pattern[px] == '?' || pattern[px] == s[sx]):
			px++
			sx++
		case px < len(pattern) && pattern[px] == '*':
			star, mark = px, sx
			px++
		case star >= 0:
			px = star + 1
			mark++
			sx = mark
		default:
			return false
		}
	}
	for px < len(pattern) && pattern[px] == '*' {
		px++
	}
	return px == len(pattern)
}

// reqInfo is what conditions look at in a request.
type reqInfo struct {
	path, host, method string
	header             func(string) []string
	source             netip.Addr
}

func (c *conditionRecord) match(ri *reqInfo) bool {
	for _, v := range c.Values {
		switch c.Field {
		case "path-pattern":
			if wildcard(v, ri.path) {
				return true
			}
		case "host-header":
			if wildcard(strings.ToLower(v), strings.ToLower(ri.host)) {
				return true
			}
		case "http-request-method":
			if wildcard(v, ri.method) {
				return true
			}
		case "http-header":
			for _, h := range ri.header(c.Header) {
				if wildcard(strings.ToLower(v), strings.ToLower(h)) {
					return true
				}
			}
		case "source-ip":
			if p, err := netip.ParsePrefix(v); err == nil && ri.source.IsValid() && p.Contains(ri.source.Unmap()) {
				return true
			}
		}
	}
	return false
}

// ---- XML ----

type weightXML struct {
	TargetGroupArn string
	Weight         int32
}

type fixedXML struct {
	MessageBody string `xml:",omitempty"`
	StatusCode  string
	ContentType string `xml:",omitempty"`
}

type actionXML struct {
	Type           string
	TargetGroupArn string `xml:",omitempty"`
	Order          int32  `xml:",omitempty"`
	ForwardConfig  *struct {
		TargetGroups []weightXML `xml:"TargetGroups>member"`
	}
	FixedResponseConfig *fixedXML
}

func actionOut(a *actionRecord) actionXML {
	ax := actionXML{Type: a.Type, Order: a.Order}
	switch a.Type {
	case "forward":
		ax.TargetGroupArn = a.TargetGroupARN
		ax.ForwardConfig = &struct {
			TargetGroups []weightXML `xml:"TargetGroups>member"`
		}{}
		for _, g := range a.groups() {
			ax.ForwardConfig.TargetGroups = append(ax.ForwardConfig.TargetGroups, weightXML{g.ARN, g.Weight})
		}
	case "fixed-response":
		if a.Fixed != nil {
			ax.FixedResponseConfig = &fixedXML{a.Fixed.MessageBody, a.Fixed.StatusCode, a.Fixed.ContentType}
		}
	}
	return ax
}

type valuesXML struct {
	Values []string `xml:"Values>member"`
}

type conditionXML struct {
	Field                   string
	Values                  []string `xml:"Values>member,omitempty"`
	PathPatternConfig       *valuesXML
	HostHeaderConfig        *valuesXML
	HttpRequestMethodConfig *valuesXML
	SourceIpConfig          *valuesXML
	HttpHeaderConfig        *struct {
		HttpHeaderName string
		Values         []string `xml:"Values>member"`
	}
}

type ruleXML struct {
	RuleArn    string
	Priority   string
	Conditions []conditionXML `xml:"Conditions>member"`
	Actions    []actionXML    `xml:"Actions>member"`
	IsDefault  bool
}

func ruleOut(r *ruleRecord) ruleXML {
	x := ruleXML{RuleArn: r.ARN, Priority: strconv.Itoa(int(r.Priority)), Conditions: []conditionXML{}}
	for _, c := range r.Conditions {
		cx := conditionXML{Field: c.Field}
		vs := &valuesXML{Values: c.Values}
		switch c.Field {
		case "path-pattern":
			cx.Values, cx.PathPatternConfig = c.Values, vs
		case "host-header":
			cx.Values, cx.HostHeaderConfig = c.Values, vs
		case "http-request-method":
			cx.HttpRequestMethodConfig = vs
		case "source-ip":
			cx.SourceIpConfig = vs
		case "http-header":
			cx.HttpHeaderConfig = &struct {
				HttpHeaderName string
				Values         []string `xml:"Values>member"`
			}{c.Header, c.Values}
		}
		x.Conditions = append(x.Conditions, cx)
	}
	for i := range r.Actions {
		x.Actions = append(x.Actions, actionOut(&r.Actions[i]))
	}
	return x
}

func defaultRuleOut(l *listenerRecord) ruleXML {
	x := ruleXML{RuleArn: defaultRuleARN(l.ARN), Priority: "default", Conditions: []conditionXML{}, IsDefault: true}
	for i := range l.Actions {
		x.Actions = append(x.Actions, actionOut(&l.Actions[i]))
	}
	return x
}

// ---- store helpers ----

func getListener(tx state.Tx, r *request, arn string) (*listenerRecord, error) {
	var l listenerRecord
	if strings.HasPrefix(arn, arnPrefix(r.account, r.region)+"listener/") {
		ok, err := tx.Get(kindListener, arn, &l)
		if err != nil {
			return nil, err
		}
		if ok {
			return &l, nil
		}
	}
	return nil, awsapi.Errorf("ListenerNotFound", "Listener '%s' not found", arn)
}

func rulesOf(tx state.Tx, listenerARN string) ([]ruleRecord, error) {
	return state.List[ruleRecord](tx, kindRule, rulePrefix(listenerARN))
}

func sortRules(rs []ruleRecord) {
	slices.SortFunc(rs, func(a, b ruleRecord) int { return int(a.Priority) - int(b.Priority) })
}

// checkActions checks the target groups actions forward to: they exist,
// in the load balancer's VPC.
func checkActions(tx state.Tx, r *request, lb *lbRecord, acts []actionRecord) error {
	for _, a := range acts {
		for _, wg := range a.groups() {
			g, err := getTG(tx, r, wg.ARN)
			if err != nil {
				return err
			}
			if g.VpcID != lb.VpcID {
				return awsapi.Errorf("InvalidConfigurationRequest", "Target group '%s' is in VPC '%s', not the load balancer's VPC '%s'", g.ARN, g.VpcID, lb.VpcID)
			}
		}
	}
	return nil
}

// listenerForActions reads a listener and its load balancer, and checks the
// target groups acts forward to against them.
func listenerForActions(tx state.Tx, r *request, arn string, acts []actionRecord) (*listenerRecord, *lbRecord, error) {
	l, err := getListener(tx, r, arn)
	if err != nil {
		return nil, nil, err
	}
	lb, err := getLB(tx, r, l.LBARN)
	if err != nil {
		return nil, nil, err
	}
	return l, lb, checkActions(tx, r, lb, acts)
}

// ---- API ----

func (s *Service) createRule(r *request) (any, error) {
	lARN, err := r.required("ListenerArn")
	if err != nil {
		return nil, err
	}
	if !r.has("Priority") {
		return nil, validation("1 validation error detected: Value null at 'priority' failed to satisfy constraint: Member must not be null")
	}
	prio, err := r.intParam("Priority", 0, 1, 50000)
	if err != nil {
		return nil, err
	}
	conds, err := r.conditions()
	if err != nil {
		return nil, err
	}
	acts, err := r.actions("Actions")
	if err != nil {
		return nil, err
	}
	tags, err := r.tags()
	if err != nil {
		return nil, err
	}
	var out ruleRecord
	err = s.Store.Update(r.ctx, func(tx state.Tx) error {
		if _, _, err := listenerForActions(tx, r, lARN, acts); err != nil {
			return err
		}
		rs, err := rulesOf(tx, lARN)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(rs, func(x ruleRecord) bool { return x.Priority == prio }) {
			return awsapi.Errorf("PriorityInUse", "Priority '%d' is currently in use", prio)
		}
		if len(rs) >= maxRulesPerListener {
			return awsapi.Errorf("TooManyRules", "A listener can have at most %d rules", maxRulesPerListener)
		}
		out = ruleRecord{ARN: rulePrefix(lARN) + newHex(8), ListenerARN: lARN, Priority: prio, Conditions: conds, Actions: acts, Tags: tags}
		return tx.Put(kindRule, out.ARN, &out)
	})
	if err != nil {
		return nil, err
	}
	s.changed()
	return struct {
		Rules []ruleXML `xml:"Rules>member"`
	}{[]ruleXML{ruleOut(&out)}}, nil
}

func (s *Service) describeRules(r *request) (any, error) {
	lARN, arns := r.param("ListenerArn"), r.list("RuleArns")
	if lARN == "" && len(arns) == 0 {
		return nil, validation("You must specify either listener ARN or rule ARNs")
	}
	if lARN != "" && len(arns) > 0 {
		return nil, validation("Listener ARN and rule ARNs cannot be specified at the same time")
	}
	var out []ruleXML
	err := s.Store.View(r.ctx, func(tx state.Tx) error {
		if lARN != "" {
			l, err := getListener(tx, r, lARN)
			if err != nil {
				return err
			}
			rs, err := rulesOf(tx, lARN)
			if err != nil {
				return err
			}
			sortRules(rs)
			for i := range rs {
				out = append(out, ruleOut(&rs[i]))
			}
			out = append(out, defaultRuleOut(l))
			return nil
		}
		for _, a := range arns {
			x, err := lookupRule(tx, r, a)
			if err != nil {
				return err
			}
			out = append(out, x)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	size, err := r.intParam("PageSize", 400, 1, 400)
	if err != nil {
		return nil, err
	}
	start := 0
	if m := r.param("Marker"); m != "" {
		if start, err = strconv.Atoi(m); err != nil || start < 0 || start > len(out) {
			return nil, validation("Invalid marker '%s'", m)
		}
	}
	out = out[start:]
	next := ""
	if len(out) > int(size) {
		out, next = out[:size], strconv.Itoa(start+int(size))
	}
	return struct {
		Rules      []ruleXML `xml:"Rules>member"`
		NextMarker string    `xml:",omitempty"`
	}{append([]ruleXML{}, out...), next}, nil
}

// lookupRule finds a rule by ARN, the default ones included.
func lookupRule(tx state.Tx, r *request, arn string) (ruleXML, error) {
	notFound := awsapi.Errorf("RuleNotFound", "One or more rules not found")
	if !strings.HasPrefix(arn, arnPrefix(r.account, r.region)+"listener-rule/") {
		return ruleXML{}, notFound
	}
	var rr ruleRecord
	ok, err := tx.Get(kindRule, arn, &rr)
	if err != nil {
		return ruleXML{}, err
	}
	if ok {
		return ruleOut(&rr), nil
	}
	var l listenerRecord
	if ok, err := tx.Get(kindListener, listenerOfRule(arn), &l); err != nil {
		return ruleXML{}, err
	} else if ok && defaultRuleARN(l.ARN) == arn {
		return defaultRuleOut(&l), nil
	}
	return ruleXML{}, notFound
}

func (s *Service) modifyRule(r *request) (any, error) {
	arn, err := r.required("RuleArn")
	if err != nil {
		return nil, err
	}
	var conds []conditionRecord
	if len(r.structs("Conditions")) > 0 {
		if conds, err = r.conditions(); err != nil {
			return nil, err
		}
	}
	var acts []actionRecord
	if len(r.structs("Actions")) > 0 {
		if acts, err = r.actions("Actions"); err != nil {
			return nil, err
		}
	}
	var out ruleXML
	err = s.Store.Update(r.ctx, func(tx state.Tx) error {
		if _, err := lookupRule(tx, r, arn); err != nil {
			return err
		}
		l, _, err := listenerForActions(tx, r, listenerOfRule(arn), acts)
		if err != nil {
			return err
		}
		if arn == defaultRuleARN(l.ARN) {
			if conds != nil {
				return awsapi.Errorf("OperationNotPermitted", "The conditions of a default rule cannot be modified")
			}
			if acts != nil {
				l.Actions = acts
				if err := tx.Put(kindListener, l.ARN, l); err != nil {
					return err
				}
			}
			out = defaultRuleOut(l)
			return nil
		}
		var rr ruleRecord
		if _, err := tx.Get(kindRule, arn, &rr); err != nil {
			return err
		}
		if conds != nil {
			rr.Conditions = conds
		}
		if acts != nil {
			rr.Actions = acts
		}
		out = ruleOut(&rr)
		return tx.Put(kindRule, arn, &rr)
	})
	if err != nil {
		return nil, err
	}
	s.changed()
	return struct {
		Rules []ruleXML `xml:"Rules>member"`
	}{[]ruleXML{out}}, nil
}

func (s *Service) deleteRule(r *request) (any, error) {
	arn, err := r.required("RuleArn")
	if err != nil {
		return nil, err
	}
	err = s.Store.Update(r.ctx, func(tx state.Tx) error {
		x, err := lookupRule(tx, r, arn)
		if err != nil {
			return err
		}
		if x.IsDefault {
			return awsapi.Errorf("OperationNotPermitted", "Default rule '%s' cannot be deleted", arn)
		}
		_, err = tx.Delete(kindRule, arn)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.changed()
	return struct{}{}, nil
}

func (s *Service) setRulePriorities(r *request) (any, error) {
	type change struct {
		arn  string
		prio int32
	}
	var cs []change
	for _, p := range r.structs("RulePriorities") {
		arn := r.param(p + "RuleArn")
		if arn == "" {
			return nil, validation("A rule ARN must be specified for each rule priority")
		}
		prio, err := r.intParam(p+"Priority", 0, 1, 50000)
		if err != nil {
			return nil, err
		}
		if !r.has(p + "Priority") {
			return nil, validation("A priority must be specified for rule '%s'", arn)
		}
		if slices.ContainsFunc(cs, func(c change) bool { return c.arn == arn }) {
			return nil, validation("Rule '%s' is specified more than once", arn)
		}
		cs = append(cs, change{arn, prio})
	}
	if len(cs) == 0 {
		return nil, validation("1 validation error detected: Value null at 'rulePriorities' failed to satisfy constraint: Member must not be null")
	}
	var out []ruleXML
	err := s.Store.Update(r.ctx, func(tx state.Tx) error {
		byListener := map[string][]ruleRecord{}
		for _, c := range cs {
			x, err := lookupRule(tx, r, c.arn)
			if err != nil {
				return err
			}
			if x.IsDefault {
				return awsapi.Errorf("OperationNotPermitted", "The priority of default rule '%s' cannot be changed", c.arn)
			}
			l := listenerOfRule(c.arn)
			if _, ok := byListener[l]; !ok {
				rs, err := rulesOf(tx, l)
				if err != nil {
					return err
				}
				byListener[l] = rs
			}
			rs := byListener[l]
			i := slices.IndexFunc(rs, func(x ruleRecord) bool { return x.ARN == c.arn })
			rs[i].Priority = c.prio
		}
		for _, rs := range byListener {
			seen := map[int32]bool{}
			for _, x := range rs {
				if seen[x.Priority] {
					return awsapi.Errorf("PriorityInUse", "Priority '%d' is currently in use", x.Priority)
				}
				seen[x.Priority] = true
			}
		}
		for _, c := range cs {
			rs := byListener[listenerOfRule(c.arn)]
			i := slices.IndexFunc(rs, func(x ruleRecord) bool { return x.ARN == c.arn })
			if err := tx.Put(kindRule, c.arn, &rs[i]); err != nil {
				return err
			}
			out = append(out, ruleOut(&rs[i]))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.changed()
	return struct {
		Rules []ruleXML `xml:"Rules>member"`
	}{out}, nil
}

func (s *Service) modifyListener(r *request) (any, error) {
	arn, err := r.required("ListenerArn")
	if err != nil {
		return nil, err
	}
	if p := r.param("Protocol"); p != "" && p != "HTTP" {
		return nil, awsapi.Errorf("UnsupportedProtocol", "Protocol '%s' is not supported; Gantry's listeners speak HTTP", p)
	}
	var port int32
	if r.has("Port") {
		if port, err = r.intParam("Port", 0, 1, 65535); err != nil {
			return nil, err
		}
	}
	var acts []actionRecord
	if len(r.structs("DefaultActions")) > 0 {
		if acts, err = r.actions("DefaultActions"); err != nil {
			return nil, err
		}
	}
	var out *listenerRecord
	err = s.Store.Update(r.ctx, func(tx state.Tx) error {
		l, lb, err := listenerForActions(tx, r, arn, acts)
		if err != nil {
			return err
		}
		if port != 0 && port != l.Port {
			ls, err := listeners(tx, listenerPrefix(l.LBARN))
			if err != nil {
				return err
			}
			if slices.ContainsFunc(ls, func(x listenerRecord) bool { return x.Port == port }) {
				return awsapi.Errorf("DuplicateListener", "A listener already exists on this port for this load balancer '%s'", l.LBARN)
			}
			if err := s.plane.checkBind(lb.Address, port); err != nil {
				return awsapi.Errorf("InvalidConfigurationRequest", "Gantry cannot listen on %s:%d: %v", lb.Address, port, err)
			}
			l.Port = port
		}
		if acts != nil {
			l.Actions = acts
		}
		out = l
		return tx.Put(kindListener, arn, l)
	})
	if err != nil {
		return nil, err
	}
	s.changed()
	return struct {
		Listeners []listenerXML `xml:"Listeners>member"`
	}{[]listenerXML{listenerOut(out)}}, nil
}

// deleteRulesOf removes a listener's rules with it.
func deleteRulesOf(tx state.Tx, listenerARN string) error {
	rs, err := rulesOf(tx, listenerARN)
	if err != nil {
		return err
	}
	for _, x := range rs {
		if _, err := tx.Delete(kindRule, x.ARN); err != nil {
			return err
		}
	}
	return nil
}
