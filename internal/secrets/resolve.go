package secrets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/state"
)

var _ agent.SecretSource = (*Service)(nil)

// GetSecrets answers the agent: the value of each valueFrom of a task's
// containers, in order. valueFrom is
//
//   - a Secrets Manager secret ARN: its AWSCURRENT string;
//   - arn:...:secret:NAME-SUFFIX:json-key:version-stage:version-id, any of
//     the three possibly empty: one top-level key of the JSON string, of the
//     given stage or version;
//   - an SSM parameter ARN or name (in the task's region): its value,
//     SecureString decrypted.
//
// Errors are worded like the ECS agent's, and name the reference, never a value.
func (s *Service) GetSecrets(ctx context.Context, req agent.SecretRequest) ([]string, error) {
	if err := s.executionRoleMay(ctx, req); err != nil {
		return nil, err
	}
	out := make([]string, len(req.ValueFrom))
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		for i, ref := range req.ValueFrom {
			v, err := s.resolve(tx, req.Account, req.Region, ref)
			if err != nil {
				return err
			}
			out[i] = v
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// executionRoleMay checks, before any value is read, that the task's
// execution role may read every reference, as Fargate reads them with that
// role's credentials: secretsmanager:GetSecretValue on a secret,
// ssm:GetParameters on a parameter.
func (s *Service) executionRoleMay(ctx context.Context, req agent.SecretRequest) error {
	if s.RoleAllows == nil {
		return nil
	}
	if req.ExecutionRoleARN == "" {
		return errors.New("the task has no execution role to read its secrets with (executionRoleArn)")
	}
	for _, ref := range req.ValueFrom {
		if strings.HasPrefix(ref, "arn:") && strings.Contains(ref, ":secretsmanager:") {
			p := strings.SplitN(ref, ":", 8)
			arn := strings.Join(p[:min(len(p), 7)], ":")
			if err := s.RoleAllows(ctx, req.TaskARN, req.ExecutionRoleARN, "secretsmanager:GetSecretValue", arn); err != nil {
				return fmt.Errorf("unable to retrieve secret from asm: service call has been retried 1 time(s): failed to fetch secret %s from secrets manager: %v", arn, err)
			}
			continue
		}
		arn := ref
		if !strings.HasPrefix(ref, "arn:") {
			name, _, _ := strings.Cut(ref, ":")
			arn = paramARN(req.Account, req.Region, name)
		}
		if err := s.RoleAllows(ctx, req.TaskARN, req.ExecutionRoleARN, "ssm:GetParameters", arn); err != nil {
			return fmt.Errorf("unable to retrieve secrets from ssm: service call has been retried 1 time(s): %v", err)
		}
	}
	return nil
}

func (s *Service) resolve(tx state.Tx, account, region, ref string) (string, error) {
	if strings.HasPrefix(ref, "arn:") && strings.Contains(ref, ":secretsmanager:") {
		return s.resolveSecret(tx, account, region, ref)
	}
	p, err := s.readParam(tx, account, region, ref, true)
	if err != nil {
		var ae *awsapi.Error
		if errors.As(err, &ae) && ae.Status < 500 {
			return "", fmt.Errorf("unable to retrieve secrets from ssm: service call has been retried 1 time(s): invalid parameters: %s", ref)
		}
		return "", err
	}
	return p.Value, nil
}

func (s *Service) resolveSecret(tx state.Tx, account, region, ref string) (string, error) {
	// arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME[:key:stage:version]
	p := strings.SplitN(ref, ":", 10)
	if len(p) < 7 || p[5] != "secret" || len(p) > 10 {
		return "", fmt.Errorf("unable to retrieve secret from asm: invalid secret ARN %s", ref)
	}
	secretARN := strings.Join(p[:7], ":")
	field := func(i int) string {
		if i < len(p) {
			return p[i]
		}
		return ""
	}
	jsonKey, stage, versionID := field(7), field(8), field(9)
	fail := func(err error) error {
		return fmt.Errorf("unable to retrieve secret from asm: service call has been retried 1 time(s): failed to fetch secret %s from secrets manager: %v", secretARN, err)
	}
	v, err := s.readValue(tx, account, region, secretARN, versionID, stage)
	if err != nil {
		var ae *awsapi.Error
		if errors.As(err, &ae) && ae.Status < 500 {
			return "", fail(err)
		}
		return "", err
	}
	if v.SecretString == nil {
		if jsonKey != "" {
			return "", fmt.Errorf("unable to retrieve secret from asm: secret %s is binary: a json key cannot be read from it", secretARN)
		}
		return string(v.SecretBinary), nil
	}
	if jsonKey == "" {
		return *v.SecretString, nil
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal([]byte(*v.SecretString), &doc); err != nil {
		return "", fmt.Errorf("unable to retrieve secret from asm: secret %s is not a JSON object, so it has no key %s", secretARN, jsonKey)
	}
	raw, ok := doc[jsonKey]
	if !ok {
		return "", fmt.Errorf("unable to retrieve secret from asm: retrieved secret from Secrets Manager did not contain json key %s", jsonKey)
	}
	var str string
	if json.Unmarshal(raw, &str) == nil {
		return str, nil
	}
	return string(raw), nil // a number, object, ... as its JSON text
}
