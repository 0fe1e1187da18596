package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/ecs"

	"github.com/gantry-dev/gantry/internal/testenv"
)

// TestSigV4Clients: the real clients sign, the server verifies, for a JSON
// service (ECS) and a Query service (EC2).
func TestSigV4Clients(t *testing.T) {
	s := testenv.Start(t)
	s.MustAWS(nil, "ecs", "list-clusters")
	s.MustAWS(nil, "ec2", "describe-vpcs")
	out, err := s.Python(`
import boto3
print(boto3.client("ecs").list_clusters()["ResponseMetadata"]["HTTPStatusCode"])
print(len(boto3.client("ec2").describe_subnets()["Subnets"]) > 0)
`)
	if err != nil || strings.Fields(out)[0] != "200" {
		t.Fatalf("boto3: %v\n%s", err, out)
	}
	if _, err := s.ECS().ListClusters(context.Background(), &ecs.ListClustersInput{}); err != nil {
		t.Fatalf("aws-sdk-go-v2: %v", err)
	}
}

// TestSigV4Rejections sends requests signed by aws-sdk-go-v2's signer, each
// wrong in one way, to a real server. Every one must get the AWS error code
// for it and a 4xx status (a 5xx makes clients retry in vain).
func TestSigV4Rejections(t *testing.T) {
	s := testenv.Start(t)
	services := []struct {
		name, service, contentType, target, body string
		// expected codes by case
		codes map[string]string
	}{
		{
			name: "ECS", service: "ecs", contentType: "application/x-amz-json-1.1",
			target: "AmazonEC2ContainerServiceV20141113.ListClusters", body: `{}`,
			codes: map[string]string{
				"wrong secret":       "InvalidSignatureException",
				"unknown key":        "UnrecognizedClientException",
				"no Authorization":   "MissingAuthenticationTokenException",
				"stale X-Amz-Date":   "InvalidSignatureException",
				"tampered body":      "InvalidSignatureException",
				"date scope":         "InvalidSignatureException",
				"future X-Amz-Date":  "InvalidSignatureException",
				"malformed":          "IncompleteSignatureException",
				"tampered signature": "InvalidSignatureException",
			},
		},
		{
			name: "EC2", service: "ec2", contentType: "application/x-www-form-urlencoded; charset=utf-8",
			body: "Action=DescribeVpcs&Version=2016-11-15",
			codes: map[string]string{
				"wrong secret":       "SignatureDoesNotMatch",
				"unknown key":        "AuthFailure",
				"no Authorization":   "MissingAuthenticationToken",
				"stale X-Amz-Date":   "RequestExpired",
				"tampered body":      "SignatureDoesNotMatch",
				"date scope":         "SignatureDoesNotMatch",
				"future X-Amz-Date":  "RequestExpired",
				"malformed":          "IncompleteSignature",
				"tampered signature": "SignatureDoesNotMatch",
			},
		},
	}
	for _, svc := range services {
		t.Run(svc.name, func(t *testing.T) {
			// sign builds the request as a client would and lets the case
			// break it after signing.
			send := func(t *testing.T, key, secret string, at time.Time, after func(r *http.Request) []byte) (string, int) {
				t.Helper()
				body := []byte(svc.body)
				r, err := http.NewRequest(http.MethodPost, s.Endpoint+"/", bytes.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				r.Header.Set("Content-Type", svc.contentType)
				if svc.target != "" {
					r.Header.Set("X-Amz-Target", svc.target)
				}
				sum := sha256.Sum256(body)
				creds := aws.Credentials{AccessKeyID: key, SecretAccessKey: secret}
				if err := v4.NewSigner().SignHTTP(context.Background(), creds, r, hex.EncodeToString(sum[:]), svc.service, s.Creds.Region, at); err != nil {
					t.Fatal(err)
				}
				if after != nil {
					if b := after(r); b != nil {
						r.Body = io.NopCloser(bytes.NewReader(b))
						r.ContentLength = int64(len(b))
					}
				}
				resp, err := http.DefaultClient.Do(r)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return errorCode(t, svc.service, b), resp.StatusCode
			}
			key, secret := s.Creds.AccessKeyID, s.Creds.SecretAccessKey
			now := time.Now().UTC()
			if code, status := send(t, key, secret, now, nil); status != 200 {
				t.Fatalf("a correctly signed request got %d %s", status, code)
			}
			cases := map[string]func(t *testing.T) (string, int){
				"wrong secret": func(t *testing.T) (string, int) { return send(t, key, secret+"x", now, nil) },
				"unknown key":  func(t *testing.T) (string, int) { return send(t, "AKIAUNKNOWNUNKNOWN00", secret, now, nil) },
				"no Authorization": func(t *testing.T) (string, int) {
					return send(t, key, secret, now, func(r *http.Request) []byte { r.Header.Del("Authorization"); return nil })
				},
				"stale X-Amz-Date":  func(t *testing.T) (string, int) { return send(t, key, secret, now.Add(-10*time.Minute), nil) },
				"future X-Amz-Date": func(t *testing.T) (string, int) { return send(t, key, secret, now.Add(10*time.Minute), nil) },
				"tampered body": func(t *testing.T) (string, int) {
					return send(t, key, secret, now, func(r *http.Request) []byte {
						if svc.service == "ec2" {
							return []byte("Action=DescribeVpcs&Version=2016-11-15&VpcId.1=vpc-0")
						}
						return []byte(`{"maxResults":1}`)
					})
				},
				"date scope": func(t *testing.T) (string, int) {
					return send(t, key, secret, now, func(r *http.Request) []byte {
						day := now.Format("20060102")
						other := now.Add(-48 * time.Hour).Format("20060102")
						r.Header.Set("Authorization", strings.Replace(r.Header.Get("Authorization"), "/"+day+"/", "/"+other+"/", 1))
						return nil
					})
				},
				"malformed": func(t *testing.T) (string, int) {
					return send(t, key, secret, now, func(r *http.Request) []byte {
						// Keeps the scope (so the request still routes) but
						// drops SignedHeaders and Signature.
						auth := r.Header.Get("Authorization")
						r.Header.Set("Authorization", auth[:strings.Index(auth, ",")])
						return nil
					})
				},
				"tampered signature": func(t *testing.T) (string, int) {
					return send(t, key, secret, now, func(r *http.Request) []byte {
						auth := r.Header.Get("Authorization")
						last := auth[len(auth)-1]
						flip := byte('0')
						if last == '0' {
							flip = '1'
						}
						r.Header.Set("Authorization", auth[:len(auth)-1]+string(flip))
						return nil
					})
				},
			}
			for name, run := range cases {
				t.Run(name, func(t *testing.T) {
					code, status := run(t)
					if want := svc.codes[name]; code != want || status < 400 || status >= 500 {
						t.Errorf("got %q (HTTP %d), want %q with a 4xx status", code, status, want)
					}
				})
			}
		})
	}
}

// errorCode reads the error code from a JSON 1.1 or EC2 XML error body.
func errorCode(t *testing.T, service string, body []byte) string {
	if service == "ec2" {
		var e struct {
			Errors []struct{ Code string } `xml:"Errors>Error"`
		}
		if err := xml.Unmarshal(body, &e); err != nil || len(e.Errors) == 0 {
			return "unparseable: " + string(body)
		}
		return e.Errors[0].Code
	}
	var e struct {
		Type string `json:"__type"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		return "unparseable: " + string(body)
	}
	return e.Type
}

// TestSigV4ClientErrors: the real clients parse the server's signature
// errors (the CLI and boto3 print the code, not "invalid XML" or a retry).
func TestSigV4ClientErrors(t *testing.T) {
	s := testenv.Start(t)
	awsWith := func(t *testing.T, extraEnv []string, args ...string) string {
		t.Helper()
		cmd := exec.Command("aws", append(args, "--output", "json")...)
		cmd.Env = append(s.Env(), extraEnv...)
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("aws %v succeeded with bad credentials", args)
		}
		return string(out)
	}
	for _, c := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"ecs wrong secret", []string{"AWS_SECRET_ACCESS_KEY=wrong"}, []string{"ecs", "list-clusters"}, "(InvalidSignatureException)"},
		{"ecs unknown key", []string{"AWS_ACCESS_KEY_ID=AKIAUNKNOWNUNKNOWN00"}, []string{"ecs", "list-clusters"}, "(UnrecognizedClientException)"},
		{"ecs unsigned", nil, []string{"ecs", "list-clusters", "--no-sign-request"}, "(MissingAuthenticationTokenException)"},
		{"ec2 wrong secret", []string{"AWS_SECRET_ACCESS_KEY=wrong"}, []string{"ec2", "describe-vpcs"}, "(SignatureDoesNotMatch)"},
		{"ec2 unknown key", []string{"AWS_ACCESS_KEY_ID=AKIAUNKNOWNUNKNOWN00"}, []string{"ec2", "describe-vpcs"}, "(AuthFailure)"},
		{"ec2 unsigned", nil, []string{"ec2", "describe-vpcs", "--no-sign-request"}, "(MissingAuthenticationToken)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if out := awsWith(t, c.env, c.args...); !strings.Contains(out, "An error occurred "+c.want) {
				t.Errorf("aws CLI printed:\n%s\nwant the code %s", out, c.want)
			}
		})
	}
	out, err := s.Python(`
import os, boto3, botocore.exceptions
for svc, call in (("ecs", "list_clusters"), ("ec2", "describe_vpcs")):
    c = boto3.client(svc, aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"], aws_secret_access_key="wrong")
    try:
        getattr(c, call)()
        print(svc, "succeeded")
    except botocore.exceptions.ClientError as e:
        print(svc, e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"])
`)
	if err != nil {
		t.Fatalf("boto3: %v\n%s", err, out)
	}
	want := "ecs InvalidSignatureException 403\nec2 SignatureDoesNotMatch 403\n"
	if out != want {
		t.Errorf("boto3 printed:\n%s\nwant:\n%s", out, want)
	}
}
