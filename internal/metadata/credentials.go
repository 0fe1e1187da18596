package metadata

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Credentials are a task role's temporary credentials, in the JSON the
// SDKs' container credential provider reads from
// AWS_CONTAINER_CREDENTIALS_RELATIVE_URI.
type Credentials struct {
	AccessKeyID     string    `json:"AccessKeyId"`
	SecretAccessKey string    `json:"SecretAccessKey"`
	Token           string    `json:"Token"`
	Expiration      time.Time `json:"Expiration"`
	RoleArn         string    `json:"RoleArn"`
}

// CredentialSource mints credentials for a task's role: the control
// plane's side (IAM). It is asked again when the ones handed out are half
// way to expiry, so clients refreshing early always get fresh ones.
type CredentialSource func(ctx context.Context, taskARN, roleARN string) (Credentials, error)

// credentialsPath is where a container fetches its task's role
// credentials: one path per container, by runtime id, checked against the
// caller's address like the metadata itself.
const credentialsPath = "/v2/credentials/"

// CredentialsURI is the value of AWS_CONTAINER_CREDENTIALS_RELATIVE_URI for
// the container with runtime id id. The SDKs and the CLI put it after
// "http://169.254.170.2", so when this server could not have port 80
// (another server on the host holds it) the URI starts with ":PORT": the
// concatenation is still this endpoint's URL.
func (s *Server) CredentialsURI(id string) string {
	port := ""
	if _, p, err := net.SplitHostPort(strings.TrimPrefix(s.url, "http://")); err == nil && p != "80" {
		port = ":" + p
	}
	return port + credentialsPath + id
}

// credCache keeps each task's current credentials so that every container
// and every refresh of one task shares them until they are due to rotate.
type credCache struct {
	mu     sync.Mutex
	byTask map[string]cachedCreds
}

type cachedCreds struct {
	role   string
	creds  Credentials
	rotate time.Time // half way to expiry
}

func (s *Server) serveCredentials(w http.ResponseWriter, r *http.Request, id string) {
	t, ok := s.prov.TaskMetadata(id)
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	if !ok || t.Status.IPv4Address == "" || host != t.Status.IPv4Address || t.Spec.TaskRoleARN == "" || s.Credentials == nil {
		// One answer for an unknown id, a foreign caller and a task
		// without a role: nothing is learnt by probing.
		writeJSON(w, http.StatusBadRequest, map[string]string{"code": "InvalidIdCredentialsRequest", "message": "CredentialsV2Request: Credentials not found"})
		return
	}
	c, err := s.taskCredentials(r.Context(), t.Spec.TaskID, t.Spec.TaskARN, t.Spec.TaskRoleARN)
	if err != nil {
		s.log.Warn("task role credentials", "task", t.Spec.TaskARN, "role", t.Spec.TaskRoleARN, "err", err)
		writeJSON(w, http.StatusBadRequest, map[string]string{"code": "InvalidIdCredentialsRequest", "message": err.Error()})
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, c)
}

func (s *Server) taskCredentials(ctx context.Context, taskID, taskARN, role string) (Credentials, error) {
	s.creds.mu.Lock()
	defer s.creds.mu.Unlock()
	now := time.Now()
	if c, ok := s.creds.byTask[taskID]; ok && c.role == role && now.Before(c.rotate) {
		return c.creds, nil
	}
	c, err := s.Credentials(ctx, taskARN, role)
	if err != nil {
		return Credentials{}, err
	}
	if s.creds.byTask == nil {
		s.creds.byTask = map[string]cachedCreds{}
	}
	for k, old := range s.creds.byTask {
		if now.After(old.creds.Expiration) {
			delete(s.creds.byTask, k) // stopped tasks' entries go once useless
		}
	}
	s.creds.byTask[taskID] = cachedCreds{role: role, creds: c, rotate: now.Add(c.Expiration.Sub(now) / 2)}
	return c, nil
}
