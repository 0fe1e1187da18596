package awsapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

const (
	testKey     = "AKIAGANTRYTEST000001"
	testSecret  = "gantry/test+secret/0123456789abcdefghijklm"
	testAccount = "123456789012"
)

type keys map[string][2]string // access key -> secret, account

func (k keys) LookupKey(id string) (string, string, bool) {
	v, ok := k[id]
	return v[0], v[1], ok
}

var testKeys = keys{testKey: {testSecret, testAccount}}

// signed is a request as a real client sends it: signed by aws-sdk-go-v2.
type signed struct {
	method, url, service, region string
	key, secret, token           string
	body                         []byte
	header                       http.Header
	at                           time.Time
}

func (s signed) request(t testing.TB) *http.Request {
	t.Helper()
	if s.method == "" {
		s.method = http.MethodPost
	}
	if s.url == "" {
		s.url = "http://127.0.0.1:8910/"
	}
	if s.key == "" {
		s.key, s.secret = testKey, testSecret
	}
	if s.region == "" {
		s.region = "us-east-1"
	}
	r := httptest.NewRequest(s.method, s.url, bytes.NewReader(s.body))
	for k, vs := range s.header {
		for _, v := range vs {
			r.Header.Add(k, v)
		}
	}
	sum := sha256.Sum256(s.body)
	creds := aws.Credentials{AccessKeyID: s.key, SecretAccessKey: s.secret, SessionToken: s.token}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, r, hex.EncodeToString(sum[:]), s.service, s.region, s.at); err != nil {
		t.Fatal(err)
	}
	// The server reads the body before Verify; hand it a fresh reader.
	r.Body = http.NoBody
	return r
}

func ecsCall(body string) signed {
	return signed{service: "ecs", body: []byte(body), header: http.Header{
		"Content-Type": {"application/x-amz-json-1.1"},
		"X-Amz-Target": {"AmazonEC2ContainerServiceV20141113.ListClusters"},
	}}
}

func ec2Call(body string) signed {
	return signed{service: "ec2", body: []byte(body), header: http.Header{
		"Content-Type": {"application/x-www-form-urlencoded; charset=utf-8"},
	}}
}

func TestVerifyAcceptsSignedRequests(t *testing.T) {
	now := time.Now().UTC()
	for name, s := range map[string]signed{
		"ecs":           ecsCall(`{"maxResults":10}`),
		"ec2":           ec2Call("Action=DescribeSubnets&Version=2016-11-15&SubnetId.1=subnet-1"),
		"empty body":    ecsCall(""),
		"session token": func() signed { s := ecsCall("{}"); s.token = "FwoGZXIvYXdzEJr//////////token"; return s }(),
		"other region":  func() signed { s := ecsCall("{}"); s.region = "eu-west-3"; return s }(),
		"query string": func() signed {
			s := ec2Call("")
			s.method, s.url = http.MethodGet, "http://h/?Version=2016-11-15&Action=DescribeVpcs&Filter.1.Name=is-default&Filter.1.Value.1=true"
			return s
		}(),
		"odd path": func() signed { s := ecsCall("{}"); s.url = "http://h/a%20b/c~d/"; return s }(),
		"repeated header": func() signed {
			s := ecsCall("{}")
			s.header.Add("X-Amz-Meta-Thing", "one")
			s.header.Add("X-Amz-Meta-Thing", "two")
			return s
		}(),
		"skew inside 5 minutes": func() signed { s := ecsCall("{}"); s.at = now.Add(-4 * time.Minute); return s }(),
	} {
		t.Run(name, func(t *testing.T) {
			if s.at.IsZero() {
				s.at = now
			}
			r := s.request(t)
			id, err := Verify(r, s.body, testKeys, now)
			if err != nil {
				t.Fatalf("Verify rejected a request signed by aws-sdk-go-v2: %v", err)
			}
			want := Identity{AccessKey: testKey, Account: testAccount, Region: s.region, Service: s.service}
			if s.region == "" {
				want.Region = "us-east-1"
			}
			if *id != want {
				t.Fatalf("identity = %+v, want %+v", *id, want)
			}
		})
	}
}

func TestVerifyRejects(t *testing.T) {
	now := time.Now().UTC()
	cases := []struct {
		name   string
		build  func(t *testing.T) (*http.Request, []byte)
		code   string
		status int
	}{
		{"wrong secret", func(t *testing.T) (*http.Request, []byte) {
			s := ecsCall("{}")
			s.secret = "not-the-secret"
			s.key = testKey
			s.at = now
			return s.request(t), s.body
		}, CodeBadSignature, 403},
		{"unknown access key", func(t *testing.T) (*http.Request, []byte) {
			s := ecsCall("{}")
			s.key, s.secret, s.at = "AKIAUNKNOWN000000000", testSecret, now
			return s.request(t), s.body
		}, CodeUnknownKey, 403},
		{"no Authorization", func(t *testing.T) (*http.Request, []byte) {
			s := ecsCall("{}")
			s.at = now
			r := s.request(t)
			r.Header.Del("Authorization")
			return r, s.body
		}, CodeMissingAuth, 403},
		{"presigned query", func(t *testing.T) (*http.Request, []byte) {
			r := httptest.NewRequest("GET", "http://h/?Action=DescribeVpcs&X-Amz-Signature=abc", nil)
			return r, nil
		}, CodeIncomplete, 403},
		{"stale date", func(t *testing.T) (*http.Request, []byte) {
			s := ecsCall("{}")
			s.at = now.Add(-10 * time.Minute)
			return s.request(t), s.body
		}, CodeBadSignature, 403},
		{"date in the future", func(t *testing.T) (*http.Request, []byte) {
			s := ecsCall("{}")
			s.at = now.Add(10 * time.Minute)
			return s.request(t), s.body
		}, CodeBadSignature, 403},
		{"tampered body", func(t *testing.T) (*http.Request, []byte) {
			s := ecsCall(`{"maxResults":10}`)
			s.at = now
			return s.request(t), []byte(`{"maxResults":99}`)
		}, CodeBadSignature, 403},
		{"tampered signed header", func(t *testing.T) (*http.Request, []byte) {
			s := ecsCall("{}")
			s.at = now
			r := s.request(t)
			r.Header.Set("X-Amz-Target", "AmazonEC2ContainerServiceV20141113.DeleteCluster")
			return r, s.body
		}, CodeBadSignature, 403},
		{"tampered query string", func(t *testing.T) (*http.Request, []byte) {
			s := ec2Call("")
			s.method, s.url, s.at = "GET", "http://h/?Action=DescribeVpcs", now
			r := s.request(t)
			r.URL.RawQuery = "Action=DeleteVpc"
			return r, nil
		}, CodeBadSignature, 403},
		{"content sha256 mismatch", func(t *testing.T) (*http.Request, []byte) {
			s := ecsCall("{}")
			s.at = now
			s.header.Set("X-Amz-Content-Sha256", strings.Repeat("0", 64))
			return s.request(t), s.body
		}, CodeBadSignature, 400},
		{"date scope mismatch", func(t *testing.T) (*http.Request, []byte) {
			s := ecsCall("{}")
			s.at = now
			r := s.request(t)
			yesterday := now.Add(-24 * time.Hour).Format("20060102")
			r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "/"+now.Format("20060102")+"/", "/"+yesterday+"/", 1))
			return r, s.body
		}, CodeBadSignature, 403},
		{"missing X-Amz-Date", func(t *testing.T) (*http.Request, []byte) {
			s := ecsCall("{}")
			s.at = now
			r := s.request(t)
			r.Header.Del("X-Amz-Date")
			return r, s.body
		}, CodeIncomplete, 403},
		{"other algorithm", func(t *testing.T) (*http.Request, []byte) {
			r := httptest.NewRequest("POST", "http://h/", nil)
			r.Header.Set("Authorization", "AWS "+testKey+":c2lnbmF0dXJl")
			return r, nil
		}, CodeIncomplete, 403},
		{"no Signature", func(t *testing.T) (*http.Request, []byte) {
			s := ecsCall("{}")
			s.at = now
			r := s.request(t)
			auth := r.Header.Get("Authorization")
			r.Header.Set("Authorization", auth[:strings.Index(auth, ", Signature=")])
			return r, s.body
		}, CodeIncomplete, 403},
		{"short credential", func(t *testing.T) (*http.Request, []byte) {
			r := httptest.NewRequest("POST", "http://h/", nil)
			r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential="+testKey+"/20250101/us-east-1/ecs, SignedHeaders=host, Signature=00")
			return r, nil
		}, CodeIncomplete, 403},
		{"signature of another key's secret in a valid shape", func(t *testing.T) (*http.Request, []byte) {
			s := ecsCall("{}")
			s.at = now
			r := s.request(t)
			r.Header.Set("Authorization", r.Header.Get("Authorization")[:len(r.Header.Get("Authorization"))-64]+strings.Repeat("a", 64))
			return r, s.body
		}, CodeBadSignature, 403},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, body := c.build(t)
			id, err := Verify(r, body, testKeys, now)
			if err == nil {
				t.Fatalf("Verify accepted it as %+v", id)
			}
			if err.Code != c.code || err.Status != c.status {
				t.Fatalf("Verify = %s (%d) %q; want %s (%d)", err.Code, err.Status, err.Message, c.code, c.status)
			}
		})
	}
}

func TestScopeService(t *testing.T) {
	for auth, want := range map[string]string{
		"AWS4-HMAC-SHA256 Credential=AKIA/20250101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0": "ec2",
		"AWS4-HMAC-SHA256 Credential=AKIA/20250101/us-east-1/ecs/aws4_request,SignedHeaders=host,Signature=0":   "ecs",
		"AWS4-HMAC-SHA256 Credential=AKIA/20250101/us-east-1/aws4_request, SignedHeaders=host":                  "",
		"":            "",
		"Credential=": "",
	} {
		if got := scopeService(auth); got != want {
			t.Errorf("scopeService(%q) = %q, want %q", auth, got, want)
		}
	}
}
