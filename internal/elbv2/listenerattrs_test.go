package elbv2

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/state"
)

func TestListenerAttributeInput(t *testing.T) {
	const p = "routing.http.response."
	bad := []struct{ k, v, says string }{
		{p + "server.enabled", "off", "true or false"},
		{p + "x_frame_options.header_value", "deny", "DENY, SAMEORIGIN"},
		{p + "x_frame_options.header_value", "ALLOW-FROM *", "DENY, SAMEORIGIN"},
		{p + "x_content_type_options.header_value", "sniff", "nosniff"},
		{p + "access_control_allow_credentials.header_value", "false", "true"},
		{p + "access_control_max_age.header_value", "86401", "between 0 and 86400"},
		{p + "access_control_max_age.header_value", "-1", "between 0 and 86400"},
		{p + "access_control_allow_methods.header_value", "GET,FETCH", "HTTP methods"},
		{p + "access_control_allow_origin.header_value", "example.com", "origin"},
		{p + "access_control_allow_origin.header_value", "https://example.com/path", "origin"},
		{p + "access_control_allow_headers.header_value", "X-A,,X-B", "header names"},
		{p + "strict_transport_security.header_value", "includeSubDomains", "max-age"},
		{p + "content_security_policy.header_value", "default-src 'self'\r\nX-Injected: 1", "valid header value"},
		{p + "content_security_policy.header_value", strings.Repeat("a", 1025), "valid header value"},
		{"routing.http.request.x_amzn_tls_version.header_name", "X-TLS", "not supported on HTTP listeners"},
		{"tcp.idle_timeout.seconds", "350", "not supported on HTTP listeners"},
		{"routing.http.response.server", "true", "Listener attribute key 'routing.http.response.server' is not recognized"},
		{"", "x", "key must be specified"},
	}
	for _, c := range bad {
		_, err := listenerAttrs.in(attrsForm(c.k, c.v))
		if e := awsapi.AsError(err); err == nil || e.Code != "ValidationError" || !strings.Contains(e.Message, c.says) {
			t.Errorf("%s=%q: %v, want ValidationError saying %q", c.k, c.v, err, c.says)
		}
	}
	if _, err := listenerAttrs.in(attrsForm()); err == nil {
		t.Error("no attributes accepted")
	}
	good := []string{
		p + "server.enabled", "false",
		p + "x_frame_options.header_value", "SAMEORIGIN",
		p + "strict_transport_security.header_value", "max-age=31536000; includeSubDomains; preload",
		p + "access_control_allow_origin.header_value", "https://app.example.com:8443",
		p + "access_control_allow_methods.header_value", "GET, POST,OPTIONS",
		p + "access_control_allow_headers.header_value", "*",
		p + "access_control_max_age.header_value", "600",
		p + "content_security_policy.header_value", "default-src 'self'; img-src *",
		p + "x_content_type_options.header_value", "",
	}
	set, err := listenerAttrs.in(attrsForm(good...))
	if err != nil || len(set) != 9 {
		t.Fatalf("good attributes: %v %v", set, err)
	}
	l := &listenerRecord{Attributes: set}
	lr := l.response()
	if !lr.noServer || len(lr.set) != 7 {
		t.Errorf("response from %v: %+v", set, lr)
	}
	out := attrsListed(listenerAttrs, nil)
	if len(out) != 11 || out[0] != (attrXML{attrServerHeader, "true"}) {
		t.Errorf("defaults: %+v", out)
	}
	for _, a := range out[1:] {
		if a.Value != "" || responseHeaderAttrs[a.Key] == "" {
			t.Errorf("default %+v", a)
		}
	}
}

// FuzzListenerAttributes: ModifyListenerAttributes' parser answers a
// ValidationError or known keys with values that are valid header values
// Go's server sends unchanged.
func FuzzListenerAttributes(f *testing.F) {
	f.Add("routing.http.response.server.enabled", "false")
	f.Add("routing.http.response.x_frame_options.header_value", "ALLOW-FROM https://a.example/")
	f.Add("routing.http.response.strict_transport_security.header_value", "max-age=\"10\"; max-age=2")
	f.Add("routing.http.response.access_control_allow_origin.header_value", "http://[::1]:80")
	f.Add("routing.http.response.content_security_policy.header_value", "a\x00b")
	f.Add("routing.http.request.x_amzn_mtls_clientcert.header_name", "X")
	f.Fuzz(func(t *testing.T, k, v string) {
		if fuzzAttrsIn(t, listenerAttrs, k, v) == nil {
			return
		}
		if _, ok := responseHeaderAttrs[k]; ok && v != "" && !validFieldValue(v) {
			t.Fatalf("%q=%q accepted as a header value", k, v)
		}
	})
}

// A listener's attributes act on its responses: the header_value ones are
// set on the targets' responses (replacing the target's own) and on the
// load balancer's, and server.enabled=false takes the load balancer's
// Server header off the responses it makes. Stored through the API, they
// reach the running listener without a restart.
func TestListenerAttributesOnResponses(t *testing.T) {
	st, err := state.OpenSQLite(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tsrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "app/1.0")
		w.Header().Set("X-Frame-Options", "ALLOW-FROM https://old.example")
		io.WriteString(w, "from target")
	})}
	go tsrv.Serve(target)
	defer tsrv.Close()
	tport := int32(target.Addr().(*net.TCPAddr).Port)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lport := ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	lb := &lbRecord{ARN: testPrefix + "loadbalancer/app/hdr/1", Name: "hdr", Type: "application", Address: "127.0.0.1"}
	g := &tgRecord{ARN: testPrefix + "targetgroup/hdr/1", Name: "hdr", TargetType: "ip", Port: tport,
		HealthCheck: healthCheck{Enabled: false, Port: "traffic-port", Path: "/", Interval: 30, Timeout: 5, Healthy: 2, Unhealthy: 2, Matcher: "200"},
		Targets:     []targetRecord{{ID: "127.0.0.1", Port: tport}}}
	l := &listenerRecord{ARN: listenerPrefix(lb.ARN) + "1", LBARN: lb.ARN, Port: int32(lport), Protocol: "HTTP",
		Actions: []actionRecord{{Type: "forward", TargetGroupARN: g.ARN}}}
	err = st.Update(context.Background(), func(tx state.Tx) error {
		for kind, v := range map[string]any{kindLB: lb, kindTG: g, kindListener: l} {
			if err := tx.Put(kind, map[string]string{kindLB: lb.ARN, kindTG: g.ARN, kindListener: l.ARN}[kind], v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	s := &Service{Store: st}
	s.Start(context.Background())
	defer s.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for s.plane.health(g.ARN, "127.0.0.1", tport).state != "healthy" {
		if time.Now().After(deadline) {
			t.Fatal("target never became healthy")
		}
		time.Sleep(20 * time.Millisecond)
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/", lport)
	get := func() (int, http.Header) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header
	}

	// Defaults: the target's headers as they are.
	if code, h := get(); code != 200 || h.Get("Server") != "app/1.0" || h.Get("X-Frame-Options") != "ALLOW-FROM https://old.example" ||
		h.Get("Strict-Transport-Security") != "" {
		t.Fatalf("defaults: %d %v", code, h)
	}
	const p = "routing.http.response."
	out, err := s.modifyListenerAttributes(testRequest("ListenerArn", l.ARN,
		"Attributes.member.1.Key", p+"server.enabled", "Attributes.member.1.Value", "false",
		"Attributes.member.2.Key", p+"x_frame_options.header_value", "Attributes.member.2.Value", "DENY",
		"Attributes.member.3.Key", p+"strict_transport_security.header_value", "Attributes.member.3.Value", "max-age=300",
		"Attributes.member.4.Key", p+"access_control_allow_origin.header_value", "Attributes.member.4.Value", "*"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, a := range out.(struct {
		Attributes []attrXML `xml:"Attributes>member"`
	}).Attributes {
		got[a.Key] = a.Value
	}
	if len(got) != 11 || got[p+"server.enabled"] != "false" || got[p+"x_frame_options.header_value"] != "DENY" || got[p+"x_content_type_options.header_value"] != "" {
		t.Fatalf("modify-listener-attributes answered %v", got)
	}
	code, h := get()
	if code != 200 || h.Get("X-Frame-Options") != "DENY" || len(h.Values("X-Frame-Options")) != 1 ||
		h.Get("Strict-Transport-Security") != "max-age=300" || h.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("target's response with the listener's headers: %d %v", code, h)
	}
	if h.Get("Server") != "app/1.0" {
		t.Errorf("the target's own Server header is the target's business: %q", h.Get("Server"))
	}
	// The load balancer's own answer (no healthy target): its headers,
	// without its Server header.
	g.Targets = nil
	if err := st.Update(context.Background(), func(tx state.Tx) error { return tx.Put(kindTG, g.ARN, g) }); err != nil {
		t.Fatal(err)
	}
	s.changed()
	code, h = get()
	if code != 503 || h.Get("Server") != "" || h.Get("X-Frame-Options") != "DENY" || h.Get("Strict-Transport-Security") != "max-age=300" {
		t.Errorf("load balancer's 503: %d %v", code, h)
	}
	// Turned back on, the load balancer names itself again.
	if _, err := s.modifyListenerAttributes(testRequest("ListenerArn", l.ARN,
		"Attributes.member.1.Key", p+"server.enabled", "Attributes.member.1.Value", "true",
		"Attributes.member.2.Key", p+"x_frame_options.header_value", "Attributes.member.2.Value", "")); err != nil {
		t.Fatal(err)
	}
	code, h = get()
	if code != 503 || h.Get("Server") != "awselb/2.0" || h.Get("X-Frame-Options") != "" || h.Get("Strict-Transport-Security") != "max-age=300" {
		t.Errorf("after turning the Server header on and X-Frame-Options off: %d %v", code, h)
	}
	_, err = s.describeListenerAttributes(testRequest("ListenerArn", l.ARN+"0"))
	if e := awsapi.AsError(err); e == nil || e.Code != "ListenerNotFound" {
		t.Errorf("unknown listener: %v", err)
	}
}
