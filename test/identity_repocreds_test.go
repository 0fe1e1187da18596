package test

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// TestRepositoryCredentials: a private registry asking for Basic auth
// (go-containerregistry's registry behind a password, on loopback) serves
// a task whose repositoryCredentials secret holds the right user and
// password; a wrong password, or none, fails the task to start with
// CannotPullContainerError.
func TestRepositoryCredentials(t *testing.T) {
	const user, pass = "puller", "pw-Rc-5150"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="private"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	ref := ln.Addr().String() + "/team/private:v1"
	img, err := testimage.Image()
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img, remote.WithAuth(&authn.Basic{Username: user, Password: pass})); err != nil {
		t.Fatalf("push to the private registry: %v", err)
	}

	s := testenv.Start(t)
	acct := s.Creds.AccountID
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "private")
	net := awsvpc(s.DefaultSubnet())
	var good, wrong smOut
	s.MustAWS(&good, "secretsmanager", "create-secret", "--name", "reg/good", "--secret-string", fmt.Sprintf(`{"username":%q,"password":%q}`, user, pass))
	s.MustAWS(&wrong, "secretsmanager", "create-secret", "--name", "reg/wrong", "--secret-string", fmt.Sprintf(`{"username":%q,"password":"not-it"}`, user))
	s.MustAWS(nil, "iam", "create-role", "--role-name", "puller", "--assume-role-policy-document", ecsTasksTrust)
	s.MustAWS(nil, "iam", "put-role-policy", "--role-name", "puller", "--policy-name", "p", "--policy-document",
		`{"Statement":{"Effect":"Allow","Action":"secretsmanager:GetSecretValue","Resource":"arn:aws:secretsmanager:*:`+acct+`:secret:reg/*"}}`)
	def := func(family, creds string) string {
		rc := ""
		if creds != "" {
			rc = fmt.Sprintf(`,"repositoryCredentials":{"credentialsParameter":%q}`, creds)
		}
		return fmt.Sprintf(`{"family":%q,"executionRoleArn":"arn:aws:iam::%s:role/puller","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
			"containerDefinitions":[{"name":"main","image":%q,"command":["sh","-c","exit 7"]%s}]}`, family, acct, ref, rc)
	}
	registerJSON(t, s, def("good", good.ARN))
	registerJSON(t, s, def("wrong", wrong.ARN))
	registerJSON(t, s, def("anonymous", ""))

	// The failures first: the image must not be on the host yet.
	for _, fam := range []string{"wrong", "anonymous"} {
		task := runTask(t, s, "--cluster", "private", "--task-definition", fam, "--network-configuration", net)
		got := waitStatus(t, s, "private", task.TaskArn, "STOPPED", 2*time.Minute)
		if got.StopCode != "TaskFailedToStart" || !strings.HasPrefix(got.StoppedReason, "CannotPullContainerError") {
			t.Errorf("%s credentials: stopCode %q reason %q, want TaskFailedToStart and CannotPullContainerError", fam, got.StopCode, got.StoppedReason)
		}
		if strings.Contains(got.StoppedReason, pass) {
			t.Errorf("stoppedReason shows the password: %s", got.StoppedReason)
		}
	}
	task := runTask(t, s, "--cluster", "private", "--task-definition", "good", "--network-configuration", net)
	got := waitStatus(t, s, "private", task.TaskArn, "STOPPED", 2*time.Minute)
	if c := got.Containers[0]; c.ExitCode == nil || *c.ExitCode != 7 {
		t.Errorf("task pulled with the right credentials: %s %q, container %+v", got.StopCode, got.StoppedReason, c)
	}
	assertNotStored(t, s, pass)
}
