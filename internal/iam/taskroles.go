package iam

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/state"
)

// TaskService is the service principal task and execution roles must trust.
const TaskService = "ecs-tasks.amazonaws.com"

// DefaultTaskCredentialsTTL is how long a task role's credentials last, as
// on Fargate; the metadata endpoint rotates them half way.
const DefaultTaskCredentialsTTL = 6 * time.Hour

// TaskCredentialsTTL is DefaultTaskCredentialsTTL unless the environment
// variable GANTRY_TASK_CREDENTIALS_TTL (a Go duration, at least 10s) says
// otherwise: tests shorten it to see rotation.
func TaskCredentialsTTL() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("GANTRY_TASK_CREDENTIALS_TTL")); err == nil && d >= 10*time.Second {
		return d
	}
	return DefaultTaskCredentialsTTL
}

// TaskCredentials are temporary credentials of a task's role.
type TaskCredentials struct {
	AccessKeyID, SecretAccessKey, Token string
	Expiration                          time.Time
	RoleArn                             string
}

// taskScope splits a task ARN into its account and task id.
func taskScope(taskARN string) (account, taskID string) {
	p := strings.SplitN(taskARN, ":", 6)
	if len(p) < 6 {
		return "", ""
	}
	return p[4], p[5][strings.LastIndex(p[5], "/")+1:]
}

// taskRole finds a role a task may use: in the task's own account, and
// trusting ECS tasks. The error is ECS's own words for a role it cannot
// assume.
func (s *Store) taskRole(ctx context.Context, taskARN, roleARN string) (*Role, error) {
	var ro *Role
	err := s.State.View(ctx, func(tx state.Tx) (err error) {
		ro, err = s.taskRoleTx(tx, taskARN, roleARN)
		return err
	})
	return ro, err
}

// CheckTaskRole is what RunTask (and a service starting tasks) asks before
// a task with role roleARN is recorded, in the caller's transaction: nil
// when ECS could assume it for the task taskARN, else ECS's error saying
// it cannot (its message is AWS's, for a ClientException).
func (s *Store) CheckTaskRole(tx state.Tx, taskARN, roleARN string) error {
	_, err := s.taskRoleTx(tx, taskARN, roleARN)
	return err
}

// ErrCannotAssume marks CheckTaskRole's refusals, apart from faults
// reading the state.
var ErrCannotAssume = errors.New("ECS cannot assume the task role")

type cannotAssume struct{ roleARN string }

func (e cannotAssume) Error() string {
	return fmt.Sprintf("ECS was unable to assume the role '%s' that was provided for this task. Please verify that the role being passed has the proper trust relationship and permissions and that your IAM user has permissions to pass this role.", e.roleARN)
}

func (e cannotAssume) Is(target error) bool { return target == ErrCannotAssume }

func (s *Store) taskRoleTx(tx state.Tx, taskARN, roleARN string) (*Role, error) {
	account, _ := taskScope(taskARN)
	cannot := cannotAssume{roleARN}
	m := roleARNRe.FindStringSubmatch(roleARN)
	if m == nil || m[1] != account {
		return nil, cannot
	}
	ro, err := (&Service{Store: s}).getRoleTx(tx, account, m[2])
	if err != nil {
		var ae *awsapi.Error
		if errors.As(err, &ae) {
			return nil, cannot // no such role, or a name IAM would refuse
		}
		return nil, err
	}
	// The keys AWS documents for a task role's trust policy, against the
	// confused deputy: the task's account and ARN.
	keys := map[string][]string{"aws:sourceaccount": {account}, "aws:sourcearn": {taskARN}}
	if ro.ARN() != roleARN || !ro.TrustsService(TaskService, keys) {
		return nil, cannot
	}
	return ro, nil
}

// TaskCredentials mints credentials of roleARN for the task taskARN, as
// ECS does for a task role: an assumed-role session named after the task
// id, held to the role's policies like any other.
func (s *Store) TaskCredentials(ctx context.Context, taskARN, roleARN string) (TaskCredentials, error) {
	_, taskID := taskScope(taskARN)
	ro, err := s.taskRole(ctx, taskARN, roleARN)
	if err != nil {
		return TaskCredentials{}, err
	}
	sess, secret, token, err := s.newSession(ctx, ro, taskID, TaskCredentialsTTL())
	if err != nil {
		return TaskCredentials{}, err
	}
	// Whole seconds, as AWS writes it; the session itself lasts a little longer.
	return TaskCredentials{AccessKeyID: sess.KeyID, SecretAccessKey: secret, Token: token, Expiration: sess.Expires.UTC().Truncate(time.Second), RoleArn: ro.ARN()}, nil
}

// ExecutionRoleAllows says whether a task's execution role may perform
// action on resource, as AWS would judge a call signed by it. The error
// reads like the one such a call would get.
func (s *Store) ExecutionRoleAllows(ctx context.Context, taskARN, roleARN, action, resource string) error {
	account, taskID := taskScope(taskARN)
	ro, err := s.taskRole(ctx, taskARN, roleARN)
	if err != nil {
		return err
	}
	if rAccount := arnAccount(resource); rAccount != "" && rAccount != account {
		return fmt.Errorf("AccessDeniedException: User: arn:aws:sts::%s:assumed-role/%s/%s is not authorized to perform: %s on resource: %s because no resource-based policy allows the %s action",
			account, ro.Name, taskID, action, resource, action)
	}
	var pols []*Policy
	for _, d := range ro.Policies {
		if p, err := ParsePolicy(d, false); err == nil {
			pols = append(pols, p)
		}
	}
	principal := "arn:aws:sts::" + account + ":assumed-role/" + ro.Name + "/" + taskID
	req := Request{Action: action, Resource: resource, Context: principalContext(account, ro.ARN(), ro.ID+":"+taskID, "AssumedRole", "")}
	why := ""
	switch EvaluateRequest(pols, req) {
	case Allow:
		return nil
	case ExplicitDeny:
		why = "with an explicit deny in an identity-based policy"
	default:
		why = "because no identity-based policy allows the " + action + " action"
	}
	return fmt.Errorf("AccessDeniedException: User: %s is not authorized to perform: %s on resource: %s %s", principal, action, resource, why)
}

// arnAccount is an ARN's account field ("" when it is not an ARN).
func arnAccount(s string) string {
	if !strings.HasPrefix(s, "arn:") {
		return ""
	}
	p := strings.SplitN(s, ":", 6)
	if len(p) < 6 {
		return ""
	}
	return p[4]
}
