package iam

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/state"
)

// Authorize is the router's hook: the account root may do anything; users
// and assumed roles are held to their inline policies.
func (s *Store) Authorize(r *http.Request, id *awsapi.Identity, action string, body []byte) *awsapi.Error {
	if id.ARN == "" || strings.HasSuffix(id.ARN, ":root") {
		return nil
	}
	if strings.EqualFold(action, "sts:GetCallerIdentity") {
		return nil // AWS answers it whatever the policies say
	}
	docs, err := s.principalPolicies(r.Context(), id)
	if err != nil {
		return awsapi.ServerError(err)
	}
	var pols []*Policy
	for _, d := range docs {
		if p, err := ParsePolicy(d, false); err == nil {
			pols = append(pols, p)
		}
	}
	resource := resourceFor(id, action, body)
	switch Evaluate(pols, action, resource) {
	case Allow:
		return nil
	case ExplicitDeny:
		return accessDenied(r, id, action, resource, "with an explicit deny in an identity-based policy")
	default:
		return accessDenied(r, id, action, resource, "because no identity-based policy allows the "+action+" action")
	}
}

func accessDenied(r *http.Request, id *awsapi.Identity, action, resource, why string) *awsapi.Error {
	msg := "User: " + id.ARN + " is not authorized to perform: " + action + " on resource: " + resource + " " + why
	switch {
	case r.Header.Get("X-Amz-Target") != "":
		return &awsapi.Error{Code: "AccessDeniedException", Message: msg, Status: http.StatusBadRequest}
	case strings.HasPrefix(action, "ec2:"):
		return &awsapi.Error{Code: "UnauthorizedOperation", Message: "You are not authorized to perform this operation. " + msg, Status: http.StatusForbidden}
	}
	return &awsapi.Error{Code: "AccessDenied", Message: msg, Status: http.StatusForbidden}
}

// principalPolicies reads the caller's inline policies afresh, so a policy
// change applies to the next request.
func (s *Store) principalPolicies(ctx context.Context, id *awsapi.Identity) ([]string, error) {
	var docs []string
	err := s.State.View(ctx, func(tx state.Tx) error {
		name := id.ARN[strings.LastIndex(id.ARN, "/")+1:]
		switch {
		case strings.Contains(id.ARN, ":user/"):
			var u User
			if _, err := tx.Get(kindUser, userKey(id.Account, name), &u); err != nil {
				return err
			}
			for _, d := range u.Policies {
				docs = append(docs, d)
			}
		case strings.Contains(id.ARN, ":assumed-role/"):
			parts := strings.Split(id.ARN, "/")
			var ro Role
			if _, err := tx.Get(kindRole, userKey(id.Account, parts[len(parts)-2]), &ro); err != nil {
				return err
			}
			for _, d := range ro.Policies {
				docs = append(docs, d)
			}
		}
		return nil
	})
	return docs, err
}

// resourceFor names the resource of a request, best effort: the cluster of
// an ECS call, the user or role of an IAM call, the role of AssumeRole;
// "*" otherwise.
func resourceFor(id *awsapi.Identity, action string, body []byte) string {
	svc, _, _ := strings.Cut(action, ":")
	switch svc {
	case "ecs":
		var req struct {
			Cluster any `json:"cluster"`
		}
		if json.Unmarshal(body, &req) == nil {
			if c, ok := req.Cluster.(string); ok && c != "" {
				if strings.HasPrefix(c, "arn:") {
					return c
				}
				return "arn:aws:ecs:" + id.Region + ":" + id.Account + ":cluster/" + c
			}
		}
	case "iam", "sts":
		f, err := parseForm(body)
		if err != nil {
			break
		}
		if v := f.get("RoleArn"); v != "" {
			return v
		}
		if v := f.get("UserName"); v != "" {
			return "arn:aws:iam::" + id.Account + ":user/" + v
		}
		if v := f.get("RoleName"); v != "" {
			return "arn:aws:iam::" + id.Account + ":role/" + v
		}
	}
	return "*"
}
