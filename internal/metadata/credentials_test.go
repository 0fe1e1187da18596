package metadata

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func TestCredentialsURI(t *testing.T) {
	if got := (&Server{url: "http://" + Address}).CredentialsURI("abc"); got != "/v2/credentials/abc" {
		t.Errorf("port 80: %q", got)
	}
	// The SDKs prepend http://169.254.170.2, so another port rides in front.
	if got := (&Server{url: "http://" + Address + ":8123"}).CredentialsURI("abc"); got != ":8123/v2/credentials/abc" {
		t.Errorf("port 8123: %q", got)
	}
}

// TestCredentialsRotate: a task's credentials are shared until half way to
// their expiry, then replaced; a task's role change is not served stale.
func TestCredentialsRotate(t *testing.T) {
	n := 0
	s := &Server{Credentials: func(ctx context.Context, taskARN, roleARN string) (Credentials, error) {
		n++
		return Credentials{AccessKeyID: fmt.Sprintf("ASIA%d", n), RoleArn: roleARN, Expiration: time.Now().Add(800 * time.Millisecond)}, nil
	}}
	ctx := context.Background()
	a, _ := s.taskCredentials(ctx, "t1", "arn:t1", "role-a")
	b, _ := s.taskCredentials(ctx, "t1", "arn:t1", "role-a")
	if a.AccessKeyID != b.AccessKeyID {
		t.Errorf("fresh credentials were replaced: %s then %s", a.AccessKeyID, b.AccessKeyID)
	}
	if c, _ := s.taskCredentials(ctx, "t2", "arn:t2", "role-a"); c.AccessKeyID == a.AccessKeyID {
		t.Errorf("two tasks share credentials")
	}
	if c, _ := s.taskCredentials(ctx, "t1", "arn:t1", "role-b"); c.RoleArn != "role-b" {
		t.Errorf("credentials of the old role served: %+v", c)
	}
	time.Sleep(500 * time.Millisecond)
	if c, _ := s.taskCredentials(ctx, "t2", "arn:t2", "role-a"); c.AccessKeyID == "ASIA2" {
		t.Errorf("credentials past half their life were not rotated")
	}
}
