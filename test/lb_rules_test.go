package test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

type cliRules struct {
	Rules []struct {
		RuleArn    string `json:"RuleArn"`
		Priority   string `json:"Priority"`
		IsDefault  bool   `json:"IsDefault"`
		Conditions []struct {
			Field             string   `json:"Field"`
			Values            []string `json:"Values"`
			PathPatternConfig struct {
				Values []string `json:"Values"`
			} `json:"PathPatternConfig"`
		} `json:"Conditions"`
		Actions []struct {
			Type          string `json:"Type"`
			ForwardConfig struct {
				TargetGroups []struct {
					TargetGroupArn string `json:"TargetGroupArn"`
					Weight         int    `json:"Weight"`
				} `json:"TargetGroups"`
			} `json:"ForwardConfig"`
		} `json:"Actions"`
	} `json:"Rules"`
}

// TestLBListenerRules routes real requests by listener rules made with the
// CLI: path patterns and host headers (wildcards, case as AWS compares
// them), forward to another target group, weighted forward, fixed
// responses, priorities changed with set-rule-priorities, and AWS's errors.
func TestLBListenerRules(t *testing.T) {
	// Two idle web tasks and exact routing checks that do not depend on
	// timing: safe beside the other parallel tests, each on its own server.
	t.Parallel()
	s := testenv.Start(t)
	loadImage(t, s, testimage.Web(t))
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "rules")
	forceDeleteServices(t, s, "rules")
	lb := newLB(t, s, "rules")
	var tgOut struct {
		TargetGroups []struct {
			TargetGroupArn string `json:"TargetGroupArn"`
		}
	}
	s.MustAWS(&tgOut, "elbv2", "create-target-group", "--name", "rules-api", "--protocol", "HTTP", "--port", "80", "--vpc-id", lb.vpc,
		"--target-type", "ip", "--health-check-interval-seconds", "5", "--health-check-timeout-seconds", "2", "--healthy-threshold-count", "2")
	apiTG := tgOut.TargetGroups[0].TargetGroupArn
	// Not about draining: without a delay, deleting the services at the end
	// stops their tasks at once instead of after the default 300 s.
	for _, tg := range []string{lb.tg, apiTG} {
		s.MustAWS(nil, "elbv2", "modify-target-group-attributes", "--target-group-arn", tg, "--attributes", "Key=deregistration_delay.timeout_seconds,Value=0")
	}

	versionedWeb(t, s, "rules-web", "web", "")
	versionedWeb(t, s, "rules-api", "api", "mkdir -p /srv/api; echo api > /srv/api/index.html;")
	for _, svc := range []struct{ name, tg string }{{"rules-web", lb.tg}, {"rules-api", apiTG}} {
		s.MustAWS(nil, "ecs", "create-service", "--cluster", "rules", "--service-name", svc.name, "--task-definition", svc.name,
			"--desired-count", "1", "--launch-type", "FARGATE", "--network-configuration", awsvpc(lb.sn1),
			"--load-balancers", "targetGroupArn="+svc.tg+",containerName=web,containerPort=80")
	}

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	get := func(path, host string) (int, string, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+lb.dns+path, nil)
		if host != "" {
			req.Host = host
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s (Host %s): %v", path, host, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b)), resp.Header.Get("Content-Type")
	}
	expect := func(path, host string, code int, body string) {
		t.Helper()
		gotCode, gotBody, _ := get(path, host)
		if gotCode != code || (body != "" && gotBody != body) {
			t.Errorf("GET %s (Host %q): %d %q, want %d %q", path, host, gotCode, gotBody, code, body)
		}
	}
	createRule := func(prio string, conds, actions string) string {
		t.Helper()
		var out cliRules
		s.MustAWS(&out, "elbv2", "create-rule", "--listener-arn", lb.listener, "--priority", prio, "--conditions", conds, "--actions", actions)
		if len(out.Rules) != 1 || out.Rules[0].Priority != prio || out.Rules[0].IsDefault {
			t.Fatalf("create-rule: %+v", out)
		}
		return out.Rules[0].RuleArn
	}

	// The api group takes traffic (and its targets leave "unused") once a
	// rule forwards to it.
	apiRule := createRule("10", `[{"Field":"path-pattern","PathPatternConfig":{"Values":["/api/*"]}}]`,
		`[{"Type":"forward","TargetGroupArn":"`+apiTG+`"}]`)
	for _, tg := range []string{lb.tg, apiTG} {
		waitTargets(t, s, tg, "healthy", 90*time.Second, func(m map[string]string) bool { return countState(m, "healthy") == 1 })
	}
	expect("/", "", 200, "web")
	hostRule := createRule("20", "Field=host-header,Values=*.example.com",
		`[{"Type":"fixed-response","FixedResponseConfig":{"StatusCode":"200","ContentType":"application/json","MessageBody":"{\"shop\":true}"}}]`)
	teapot := createRule("30", `[{"Field":"path-pattern","Values":["/api/*"]},{"Field":"http-request-method","HttpRequestMethodConfig":{"Values":["GET"]}}]`,
		`[{"Type":"fixed-response","FixedResponseConfig":{"StatusCode":"418","MessageBody":"teapot"}}]`)

	expect("/", "", 200, "web")
	expect("/api/", "", 200, "api")
	expect("/API/", "", 404, "") // paths compare case-sensitively: the default (web) has no /API/
	if code, body, ct := get("/anything", "Shop.EXAMPLE.com"); code != 200 || body != `{"shop":true}` || !strings.HasPrefix(ct, "application/json") {
		t.Errorf("host-header rule: %d %q %q", code, body, ct)
	}
	expect("/", "example.com", 200, "web") // *.example.com needs a subdomain

	// Priorities decide: the teapot rule moves ahead of the api rule.
	expectAWSError(t, s, "PriorityInUse", "elbv2", "create-rule", "--listener-arn", lb.listener, "--priority", "10",
		"--conditions", "Field=path-pattern,Values=/x", "--actions", "Type=forward,TargetGroupArn="+lb.tg)
	expectAWSError(t, s, "PriorityInUse", "elbv2", "set-rule-priorities", "--rule-priorities", "RuleArn="+teapot+",Priority=20")
	var moved cliRules
	s.MustAWS(&moved, "elbv2", "set-rule-priorities", "--rule-priorities", "RuleArn="+teapot+",Priority=5", "RuleArn="+apiRule+",Priority=40")
	if len(moved.Rules) != 2 {
		t.Errorf("set-rule-priorities: %+v", moved)
	}
	expect("/api/", "", 418, "teapot")
	var rules cliRules
	s.MustAWS(&rules, "elbv2", "describe-rules", "--listener-arn", lb.listener)
	var order []string
	for _, r := range rules.Rules {
		order = append(order, r.Priority)
	}
	if fmt.Sprint(order) != "[5 20 40 default]" || !rules.Rules[3].IsDefault {
		t.Errorf("describe-rules order: %v", order)
	}
	expectAWSError(t, s, "OperationNotPermitted", "elbv2", "delete-rule", "--rule-arn", rules.Rules[3].RuleArn)
	expectAWSError(t, s, "OperationNotPermitted", "elbv2", "set-rule-priorities", "--rule-priorities", "RuleArn="+rules.Rules[3].RuleArn+",Priority=7")
	s.MustAWS(nil, "elbv2", "delete-rule", "--rule-arn", teapot)
	expectAWSError(t, s, "RuleNotFound", "elbv2", "delete-rule", "--rule-arn", teapot)
	expectAWSError(t, s, "RuleNotFound", "elbv2", "describe-rules", "--rule-arns", teapot)
	expect("/api/", "", 200, "api")

	// Weighted forward on the default rule: 3 to web for 1 to api.
	s.MustAWS(nil, "elbv2", "modify-rule", "--rule-arn", rules.Rules[3].RuleArn, "--actions",
		`[{"Type":"forward","ForwardConfig":{"TargetGroups":[{"TargetGroupArn":"`+lb.tg+`","Weight":3},{"TargetGroupArn":"`+apiTG+`","Weight":1}]}}]`)
	counts := map[string]int{}
	for i := 0; i < 400; i++ {
		_, body, _ := get("/", "")
		counts[body]++
	}
	if counts["web"]+counts["api"] != 400 || counts["api"] < 50 || counts["api"] > 160 {
		t.Errorf("weighted forward 3:1 over 400 requests: %v", counts)
	}
	var ls struct {
		Listeners []struct {
			DefaultActions []struct {
				ForwardConfig struct {
					TargetGroups []struct{ Weight int }
				}
			}
		}
	}
	s.MustAWS(&ls, "elbv2", "describe-listeners", "--listener-arns", lb.listener)
	if len(ls.Listeners) != 1 || len(ls.Listeners[0].DefaultActions[0].ForwardConfig.TargetGroups) != 2 {
		t.Errorf("describe-listeners after modify-rule on the default rule: %+v", ls)
	}

	// Modify a rule's conditions; errors name what is wrong.
	s.MustAWS(nil, "elbv2", "modify-rule", "--rule-arn", hostRule, "--conditions", "Field=host-header,Values=api.local")
	if code, body, _ := get("/", "api.local"); code != 200 || body != `{"shop":true}` {
		t.Errorf("modified host rule: %d %q", code, body)
	}
	expectAWSError(t, s, "ResourceInUse", "elbv2", "delete-target-group", "--target-group-arn", apiTG)
	expectAWSError(t, s, "ValidationError", "elbv2", "create-rule", "--listener-arn", lb.listener, "--priority", "50",
		"--conditions", "Field=path-pattern,Values=/a,/b,/c,/d,/e,/f", "--actions", "Type=forward,TargetGroupArn="+lb.tg)
	expectAWSError(t, s, "ValidationError", "elbv2", "create-rule", "--listener-arn", lb.listener, "--priority", "50",
		"--conditions", "Field=path-pattern,Values=/a b", "--actions", "Type=forward,TargetGroupArn="+lb.tg)
	expectAWSError(t, s, "ValidationError", "elbv2", "create-rule", "--listener-arn", lb.listener, "--priority", "50001",
		"--conditions", "Field=path-pattern,Values=/a", "--actions", "Type=forward,TargetGroupArn="+lb.tg)
	expectAWSError(t, s, "ValidationError", "elbv2", "create-rule", "--listener-arn", lb.listener, "--priority", "50",
		"--conditions", "Field=path-pattern,Values=/a", "--actions", `[{"Type":"fixed-response","FixedResponseConfig":{"StatusCode":"302"}}]`)
	expectAWSError(t, s, "TargetGroupNotFound", "elbv2", "create-rule", "--listener-arn", lb.listener, "--priority", "50",
		"--conditions", "Field=path-pattern,Values=/a", "--actions", "Type=forward,TargetGroupArn="+strings.Replace(apiTG, "rules-api", "nope", 1))
	expectAWSError(t, s, "ListenerNotFound", "elbv2", "create-rule", "--listener-arn", lb.listener+"0", "--priority", "50",
		"--conditions", "Field=path-pattern,Values=/a", "--actions", "Type=forward,TargetGroupArn="+lb.tg)

	// Deleting the listener takes its rules with it.
	s.MustAWS(nil, "elbv2", "delete-listener", "--listener-arn", lb.listener)
	expectAWSError(t, s, "RuleNotFound", "elbv2", "describe-rules", "--rule-arns", hostRule)
	s.MustAWS(nil, "elbv2", "delete-target-group", "--target-group-arn", apiTG)
}
