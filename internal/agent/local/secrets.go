package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/images"
)

// taskSecrets are the values a task's containers reference, read once per
// run of the task's goroutine and kept in memory only: never in the task
// record, never logged. (The container's environment does reach
// containerd's container metadata and runc's bundle, as with Docker.)
type taskSecrets struct {
	env   map[int]map[string]string // by container index
	creds map[int][2]string         // registry user and password by container index
}

const secretsReason = "ResourceInitializationError: unable to pull secrets or registry auth: "

// loadSecrets reads every container's secrets and registry credentials
// through the agent's SecretSource. Its errors are the task's
// stoppedReason, in the words of the ECS agent.
func (r *runner) loadSecrets(ctx context.Context) error {
	if r.secrets != nil {
		return nil
	}
	rec := r.t.record()
	var refs []string
	for _, c := range rec.Spec.Containers {
		for _, s := range c.Secrets {
			refs = append(refs, s.ValueFrom)
		}
		if c.RepositoryCredentials != "" {
			refs = append(refs, c.RepositoryCredentials)
		}
	}
	ts := &taskSecrets{env: map[int]map[string]string{}, creds: map[int][2]string{}}
	if len(refs) == 0 {
		r.secrets = ts
		return nil
	}
	src := r.t.a.cfg.Secrets
	if src == nil {
		return errors.New(secretsReason + "execution resource retrieval failed: this agent has no secret source")
	}
	account, region := arnScope(rec.Spec.TaskARN)
	vals, err := src.GetSecrets(ctx, agent.SecretRequest{Account: account, Region: region, TaskARN: rec.Spec.TaskARN, ValueFrom: refs, ExecutionRoleARN: rec.Spec.ExecutionRoleARN})
	if err != nil {
		return errors.New(secretsReason + "execution resource retrieval failed: " + err.Error())
	}
	if len(vals) != len(refs) {
		return fmt.Errorf("%sexecution resource retrieval failed: asked for %d values, got %d", secretsReason, len(refs), len(vals))
	}
	i := 0
	for idx, c := range rec.Spec.Containers {
		for _, s := range c.Secrets {
			if ts.env[idx] == nil {
				ts.env[idx] = map[string]string{}
			}
			ts.env[idx][s.Name] = vals[i]
			i++
		}
		if c.RepositoryCredentials != "" {
			var rc struct {
				Username string `json:"username"`
				Password string `json:"password"`
			}
			if err := json.Unmarshal([]byte(vals[i]), &rc); err != nil || rc.Username == "" {
				return fmt.Errorf("%sexecution resource retrieval failed: the registry credentials of container %s (%s) are not a JSON object with username and password", secretsReason, c.Name, c.RepositoryCredentials)
			}
			ts.creds[idx] = [2]string{rc.Username, rc.Password}
			i++
		}
	}
	r.secrets = ts
	return nil
}

// arnScope is the region and account of an ARN.
func arnScope(arn string) (account, region string) {
	p := strings.SplitN(arn, ":", 6)
	if len(p) < 6 {
		return "", ""
	}
	return p[4], p[3]
}

// environment is the container's environment with its secrets over it.
func (r *runner) environment(c *ctr) (map[string]string, error) {
	if len(c.spec.Secrets) == 0 {
		return c.spec.Environment, nil
	}
	if err := r.loadSecrets(r.ctx); err != nil {
		return nil, err
	}
	env := make(map[string]string, len(c.spec.Environment)+len(c.spec.Secrets))
	for k, v := range c.spec.Environment {
		env[k] = v
	}
	for k, v := range r.secrets.env[c.idx] {
		env[k] = v
	}
	return env, nil
}

// pullOptions gives a pull the container's registry credentials, for the
// registry its image names (any other asks anonymously).
func (r *runner) pullOptions(c *ctr) []images.PullOptions {
	if c.spec.RepositoryCredentials == "" || r.secrets == nil {
		return nil
	}
	cr, ok := r.secrets.creds[c.idx]
	if !ok {
		return nil
	}
	name, err := images.Normalize(c.spec.Image)
	if err != nil {
		return nil
	}
	host, _, _ := strings.Cut(name, "/")
	return []images.PullOptions{{Credentials: func(h string) (string, string, error) {
		if h == host || (host == "docker.io" && h == "registry-1.docker.io") {
			return cr[0], cr[1], nil
		}
		return "", "", nil
	}}}
}
