package awsapi

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// fuzzNow is the clock of the fuzz targets; the seeds are signed at it, so
// the fuzzer starts from requests that verify and mutates towards the edges.
var fuzzNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// FuzzVerify feeds arbitrary Authorization, X-Amz-Date, content hash and
// body to Verify and to the Router: neither may panic, and every rejection
// must be an AWS error with a 4xx status (a 5xx would make clients retry a
// request that can never succeed).
func FuzzVerify(f *testing.F) {
	for _, s := range []signed{
		ecsCall(`{"name":"x"}`),
		jsonCall("Echo", `{"name":"x"}`),
		ec2Call("Action=DescribeVpcs&Version=2016-11-15"),
	} {
		s.at = fuzzNow
		r := s.request(f)
		f.Add(r.Header.Get("Authorization"), r.Header.Get("X-Amz-Date"), "", r.Header.Get("X-Amz-Target"), string(s.body))
	}
	f.Add("AWS4-HMAC-SHA256 Credential=/////, SignedHeaders=;;;, Signature=", "20250601T120000Z", "UNSIGNED-PAYLOAD", "", "")
	f.Add("AWS4-HMAC-SHA256 ,,,==,", "", "", "Test_20250101.Echo", "{}")
	f.Add("AWS4-HMAC-SHA256 Credential=AKIAGANTRYTEST000001/20250601/us-east-1/ecs/aws4_request, SignedHeaders=content-length;host;x-amz-date;%zz, Signature=00", "20250601T120000Z", "", "", "")

	rt := testRouter(&recordingQuery{name: "ec2"})
	rt.Now = func() time.Time { return fuzzNow }
	f.Fuzz(func(t *testing.T, auth, date, sha, target, body string) {
		r := httptest.NewRequest("POST", "http://127.0.0.1:8910/", nil)
		r.Header.Set("Authorization", auth)
		r.Header.Set("X-Amz-Date", date)
		if sha != "" {
			r.Header.Set("X-Amz-Content-Sha256", sha)
		}
		if target != "" {
			r.Header.Set("X-Amz-Target", target)
			r.Header.Set("Content-Type", "application/x-amz-json-1.1")
		} else {
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
		}
		if id, err := Verify(r, []byte(body), testKeys, fuzzNow); err != nil {
			if err.Code == "" || err.Status < 400 || err.Status >= 500 {
				t.Fatalf("Verify error %+v: want an AWS code and a 4xx status", err)
			}
		} else if id.Account != testAccount {
			t.Fatalf("verified as %+v", id)
		}
		w := serve(rt, r, []byte(body))
		if w.Code >= 500 {
			t.Fatalf("router answered %d: %s", w.Code, w.Body)
		}
	})
}

// FuzzScopeService: the router reads the scope before anything is verified.
func FuzzScopeService(f *testing.F) {
	f.Add("AWS4-HMAC-SHA256 Credential=AKIA/20250101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0")
	f.Add("Credential=a/b/c/d/e,")
	f.Fuzz(func(t *testing.T, auth string) {
		svc := scopeService(auth)
		if svc != "" && !strings.Contains(auth, "/"+svc+"/") {
			t.Fatalf("scopeService(%q) = %q, not in the header", auth, svc)
		}
	})
}
