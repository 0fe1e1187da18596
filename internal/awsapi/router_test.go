package awsapi

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

type echoIn struct {
	Name  *string `json:"name"`
	Count *int32  `json:"count"`
}

type echoOut struct {
	Name    string `json:"name"`
	Account string `json:"account"`
}

// recordingQuery stands in for a Query service so the router's choices are
// visible; the real EC2 service is exercised in test/sigv4_test.go.
type recordingQuery struct {
	name   string
	served map[string][]string
	err    *Error
}

func (q *recordingQuery) ServeQuery(w http.ResponseWriter, r *http.Request, form map[string][]string) {
	q.served = form
	w.Write([]byte("<ok/>"))
}

func (q *recordingQuery) WriteError(w http.ResponseWriter, e *Error) {
	q.err = e
	w.WriteHeader(e.Status)
	w.Write([]byte("<" + q.name + "/>"))
}

func testRouter(queries ...*recordingQuery) *Router {
	rt := &Router{
		Keys: testKeys,
		JSON: map[string]*JSONService{"Test_20250101": {
			TargetPrefix: "Test_20250101",
			Ops: map[string]Handler{
				"Echo": Op(func(ctx context.Context, in *echoIn) (*echoOut, error) {
					if in.Name == nil {
						return nil, InvalidParameter("name is required")
					}
					return &echoOut{Name: *in.Name, Account: IdentityFrom(ctx).Account}, nil
				}),
				"Panic": func(context.Context, []byte) (any, error) { panic("boom") },
			},
		}},
		Query: map[string]QueryService{},
	}
	for _, q := range queries {
		rt.Query[q.name] = q
	}
	return rt
}

func serve(rt *Router, r *http.Request, body []byte) *httptest.ResponseRecorder {
	r.Body = http.NoBody
	if body != nil {
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	w := httptest.NewRecorder()
	rt.ServeHTTP(w, r)
	return w
}

func jsonCall(op, body string) signed {
	return signed{service: "test", body: []byte(body), at: time.Now().UTC(), header: http.Header{
		"Content-Type": {"application/x-amz-json-1.1"},
		"X-Amz-Target": {"Test_20250101." + op},
	}}
}

func jsonError(t *testing.T, w *httptest.ResponseRecorder) (string, int) {
	t.Helper()
	var e struct {
		Type    string `json:"__type"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
		t.Fatalf("error body %q is not JSON: %v", w.Body.String(), err)
	}
	if e.Message == "" {
		t.Errorf("error %s has no message", e.Type)
	}
	return e.Type, w.Code
}

func TestRouterJSON(t *testing.T) {
	rt := testRouter()
	s := jsonCall("Echo", `{"name":"x"}`)
	w := serve(rt, s.request(t), s.body)
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	var out echoOut
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil || out != (echoOut{"x", testAccount}) {
		t.Fatalf("body %s: %v", w.Body, err)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/x-amz-json-1.1" {
		t.Errorf("Content-Type %q", ct)
	}
	if w.Header().Get("X-Amzn-RequestId") == "" {
		t.Error("no X-Amzn-RequestId")
	}

	for _, c := range []struct {
		name   string
		req    func() (*http.Request, []byte)
		code   string
		status int
	}{
		{"handler error", func() (*http.Request, []byte) { s := jsonCall("Echo", `{}`); return s.request(t), s.body }, "InvalidParameterException", 400},
		{"malformed JSON", func() (*http.Request, []byte) { s := jsonCall("Echo", `{"name":`); return s.request(t), s.body }, "SerializationException", 400},
		{"wrong type", func() (*http.Request, []byte) { s := jsonCall("Echo", `{"name":5}`); return s.request(t), s.body }, "SerializationException", 400},
		{"unknown operation", func() (*http.Request, []byte) { s := jsonCall("Nope", `{}`); return s.request(t), s.body }, "UnknownOperationException", 400},
		{"unknown prefix", func() (*http.Request, []byte) {
			s := jsonCall("Echo", `{}`)
			s.header.Set("X-Amz-Target", "Other_1.Echo")
			return s.request(t), s.body
		}, "UnknownOperationException", 400},
		{"handler panic", func() (*http.Request, []byte) { s := jsonCall("Panic", `{}`); return s.request(t), s.body }, "ServerException", 500},
		{"bad signature", func() (*http.Request, []byte) {
			s := jsonCall("Echo", `{"name":"x"}`)
			s.secret, s.key = "wrong", testKey
			return s.request(t), s.body
		}, CodeBadSignature, 403},
		{"unsigned", func() (*http.Request, []byte) {
			r := httptest.NewRequest("POST", "/", nil)
			r.Header.Set("X-Amz-Target", "Test_20250101.Echo")
			return r, []byte(`{"name":"x"}`)
		}, CodeMissingAuth, 403},
		{"no target, no auth", func() (*http.Request, []byte) {
			return httptest.NewRequest("POST", "/", nil), []byte(`{}`)
		}, "UnknownOperationException", 400},
		{"too large", func() (*http.Request, []byte) {
			s := jsonCall("Echo", `{}`)
			return s.request(t), bytes.Repeat([]byte(" "), MaxBody+1)
		}, "RequestEntityTooLargeException", 413},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, body := c.req()
			code, status := jsonError(t, serve(rt, r, body))
			if code != c.code || status != c.status {
				t.Fatalf("got %s (%d), want %s (%d)", code, status, c.code, c.status)
			}
		})
	}
}

func TestRouterQuery(t *testing.T) {
	ec2 := &recordingQuery{name: "ec2"}
	rt := testRouter(ec2)
	s := ec2Call("Action=DescribeVpcs&Version=2016-11-15&VpcId.1=vpc-1")
	s.at = time.Now().UTC()
	w := serve(rt, s.request(t), s.body)
	if w.Code != 200 || ec2.served["Action"][0] != "DescribeVpcs" || ec2.served["VpcId.1"][0] != "vpc-1" {
		t.Fatalf("status %d, form %v", w.Code, ec2.served)
	}

	// Signature failures go to the Query service's own error writer,
	// including for requests that carry no scope to route by.
	for name, r := range map[string]func() (*http.Request, []byte){
		"bad signature": func() (*http.Request, []byte) {
			s := ec2Call("Action=DescribeVpcs&Version=2016-11-15")
			s.key, s.secret, s.at = testKey, "wrong", time.Now().UTC()
			return s.request(t), s.body
		},
		"unsigned POST": func() (*http.Request, []byte) {
			r := httptest.NewRequest("POST", "/", nil)
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
			return r, []byte("Action=DescribeVpcs&Version=2016-11-15")
		},
		"unsigned GET": func() (*http.Request, []byte) {
			return httptest.NewRequest("GET", "/?Action=DescribeVpcs&Version=2016-11-15", nil), nil
		},
		"garbage Authorization": func() (*http.Request, []byte) {
			r := httptest.NewRequest("POST", "/", nil)
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.Header.Set("Authorization", "AWS4-HMAC-SHA256 nonsense")
			return r, []byte("Action=DescribeVpcs")
		},
	} {
		t.Run(name, func(t *testing.T) {
			ec2.err = nil
			req, body := r()
			w := serve(rt, req, body)
			if ec2.err == nil {
				t.Fatalf("the Query service's WriteError was not used: %d %s", w.Code, w.Body)
			}
			if w.Code < 400 || w.Code >= 500 {
				t.Fatalf("status %d", w.Code)
			}
		})
	}

	// With several Query services, an unattributable request still gets XML.
	rt = testRouter(&recordingQuery{name: "ec2"}, &recordingQuery{name: "iam"})
	r := httptest.NewRequest("POST", "/", nil)
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w = serve(rt, r, []byte("Action=ListUsers"))
	var e struct {
		XMLName xml.Name `xml:"ErrorResponse"`
		Error   struct{ Type, Code, Message string }
	}
	if err := xml.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error.Code != "MissingAuthenticationToken" || w.Code != 403 {
		t.Fatalf("generic Query error: %d %s (%v)", w.Code, w.Body, err)
	}
	if !strings.HasPrefix(w.Header().Get("Content-Type"), "text/xml") {
		t.Errorf("Content-Type %q", w.Header().Get("Content-Type"))
	}
}
