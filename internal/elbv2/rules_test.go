package elbv2

import (
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// wildcardRE is the obvious (and slower) reading of an ALB wildcard
// pattern, to check wildcard against.
func wildcardRE(pattern string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString(`^`)
	for _, r := range pattern {
		switch r {
		case '*':
			b.WriteString(`.*`)
		case '?':
			b.WriteString(`.`)
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString(`$`)
	return regexp.MustCompile("(?s)" + b.String())
}

func TestWildcard(t *testing.T) {
	for _, c := range []struct {
		pattern, s string
		want       bool
	}{
		{"/api/*", "/api/", true},
		{"/api/*", "/api/v1/users", true},
		{"/api/*", "/api", false},
		{"/API/*", "/api/x", false},
		{"/img/*.png", "/img/a/b.png", true},
		{"/img/*.png", "/img/a/b.jpg", false},
		{"/v?/x", "/v1/x", true},
		{"/v?/x", "/v12/x", false},
		{"*.example.com", "shop.example.com", true},
		{"*.example.com", "example.com", false},
		{"*", "", true},
		{"", "", true},
		{"a*b*c", "aXbYbZc", true},
		{"a*b*c", "aXbYbZ", false},
	} {
		if got := wildcard(c.pattern, c.s); got != c.want {
			t.Errorf("wildcard(%q, %q) = %v, want %v", c.pattern, c.s, got, c.want)
		}
	}
}

func FuzzWildcard(f *testing.F) {
	f.Add("/api/*", "/api/v1")
	f.Add("*a?b*", "xxaybzz")
	f.Fuzz(func(t *testing.T, pattern, s string) {
		if len(pattern) > 64 || len(s) > 64 || !isASCII(pattern) || !isASCII(s) {
			return
		}
		if got, want := wildcard(pattern, s), wildcardRE(pattern).MatchString(s); got != want {
			t.Fatalf("wildcard(%q, %q) = %v, regexp says %v", pattern, s, got, want)
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// FuzzRuleInput feeds CreateRule-style Query forms to the condition and
// action parsers: they answer a value or an AWS error, never panic, and
// what they accept keeps the limits AWS sets.
func FuzzRuleInput(f *testing.F) {
	f.Add("Conditions.member.1.Field=path-pattern&Conditions.member.1.Values.member.1=/api/*&Actions.member.1.Type=forward&Actions.member.1.TargetGroupArn=arn:x")
	f.Add("Conditions.member.1.Field=host-header&Conditions.member.1.HostHeaderConfig.Values.member.1=*.example.com&Actions.member.1.Type=fixed-response&Actions.member.1.FixedResponseConfig.StatusCode=404")
	f.Add("Conditions.member.1.Field=http-header&Conditions.member.1.HttpHeaderConfig.HttpHeaderName=X-A&Conditions.member.1.HttpHeaderConfig.Values.member.1=b&Actions.member.1.Type=forward&Actions.member.1.ForwardConfig.TargetGroups.member.1.TargetGroupArn=a&Actions.member.1.ForwardConfig.TargetGroups.member.1.Weight=3&Actions.member.1.ForwardConfig.TargetGroups.member.2.TargetGroupArn=b")
	f.Add("Conditions.member.1.Field=source-ip&Conditions.member.1.SourceIpConfig.Values.member.1=10.0.0.0/8&Actions.member.1.Type=redirect")
	f.Fuzz(func(t *testing.T, form string) {
		q, err := url.ParseQuery(form)
		if err != nil {
			return
		}
		r := &request{form: q}
		conds, cerr := r.conditions()
		acts, aerr := r.actions("Actions")
		if cerr == nil {
			total := 0
			for _, c := range conds {
				total += len(c.Values)
				c.match(&reqInfo{path: "/a", host: "h", method: "GET", header: func(string) []string { return []string{"v"} }})
			}
			if total == 0 || total > maxConditionValues {
				t.Fatalf("accepted %d condition values: %+v", total, conds)
			}
		}
		if aerr == nil {
			if len(acts) != 1 {
				t.Fatalf("accepted %d actions", len(acts))
			}
			a := acts[0]
			switch a.Type {
			case "forward":
				if len(a.groups()) == 0 || len(a.groups()) > maxWeightedGroups {
					t.Fatalf("forward to %d groups", len(a.groups()))
				}
			case "fixed-response":
				if a.Fixed == nil || !statusCodeRE.MatchString(a.Fixed.StatusCode) {
					t.Fatalf("fixed response %+v", a.Fixed)
				}
			default:
				t.Fatalf("accepted action type %q", a.Type)
			}
			ruleOut(&ruleRecord{Conditions: conds, Actions: acts})
		}
	})
}
