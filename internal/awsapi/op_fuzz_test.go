package awsapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"testing"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
)

// fuzzOp checks awsapi.Op's decoding of one generated ECS shape: any body
// either decodes (and then was valid JSON) or is refused with a 400
// SerializationException; it never panics and never looks like a server
// fault.
func fuzzOp[In any](f *testing.F, seeds ...string) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	reached := false
	h := awsapi.Op(func(_ context.Context, in *In) (*struct{}, error) {
		reached = true
		if _, err := json.Marshal(in); err != nil {
			// What was decoded must be encodable again: handlers echo
			// request fields into responses.
			return nil, errors.New("re-encode: " + err.Error())
		}
		return &struct{}{}, nil
	})
	f.Fuzz(func(t *testing.T, body []byte) {
		reached = false
		_, err := h(context.Background(), body)
		if err == nil {
			if len(bytes.TrimSpace(body)) > 0 && !json.Valid(body) {
				t.Fatalf("accepted invalid JSON %q", body)
			}
			return
		}
		var e *awsapi.Error
		if !errors.As(err, &e) {
			t.Fatalf("error %v is not an *awsapi.Error (reached handler: %v)", err, reached)
		}
		if e.Code != "SerializationException" || e.Status != http.StatusBadRequest {
			t.Fatalf("body %q: got %s (%d) %q; want SerializationException (400)", body, e.Code, e.Status, e.Message)
		}
	})
}

func FuzzRunTaskRequest(f *testing.F) {
	fuzzOp[ecstypes.RunTaskRequest](f,
		`{"cluster":"demo","taskDefinition":"web","count":1,"launchType":"FARGATE","networkConfiguration":{"awsvpcConfiguration":{"subnets":["subnet-1"],"assignPublicIp":"DISABLED"}}}`,
		`{"overrides":{"containerOverrides":[{"name":"web","command":["sh","-c","echo hi"],"environment":[{"name":"A","value":"1"}]}]},"tags":[{"key":"k","value":"v"}]}`,
		`{"count":"1"}`,
		`{"count":1e99}`,
		`[]`,
		``,
	)
}

func FuzzRegisterTaskDefinitionRequest(f *testing.F) {
	web, err := os.ReadFile("../../docs/examples/web-task.json")
	if err != nil {
		f.Fatal(err)
	}
	fuzzOp[ecstypes.RegisterTaskDefinitionRequest](f,
		string(web),
		`{"family":"f","cpu":"256","memory":"512","containerDefinitions":[{"name":"c","image":"busybox","healthCheck":{"command":["CMD","true"],"interval":5},"essential":false}]}`,
		`{"family":"f","cpu":256}`,
		`{"containerDefinitions":[{"portMappings":[{"containerPort":"80"}]}]}`,
		`{"family":"f"`,
		`null`,
	)
}
