package iam

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/state"
)

// Authorize is the router's hook. Any caller naming another account's
// resource by ARN is refused (Gantry has no resource-based policies to
// allow it); otherwise the account root may do anything, and users and
// assumed roles are held to their inline policies.
func (s *Store) Authorize(r *http.Request, id *awsapi.Identity, action string, body []byte) *awsapi.Error {
	if strings.EqualFold(action, "sts:GetCallerIdentity") {
		return nil // AWS answers it whatever the policies say
	}
	caller := id.ARN
	if caller == "" {
		caller = "arn:aws:iam::" + id.Account + ":root"
	}
	if !strings.EqualFold(action, "sts:AssumeRole") { // a role's trust policy decides that one
		if foreign := foreignARN(id.Account, r, body); foreign != "" {
			return accessDenied(r, caller, action, foreign, "because no resource-based policy allows the "+action+" action")
		}
	}
	if strings.HasSuffix(caller, ":root") {
		return nil
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
	switch EvaluateRequest(pols, Request{Action: action, Resource: resource, Context: RequestContext(r, id)}) {
	case Allow:
		return nil
	case ExplicitDeny:
		return accessDenied(r, caller, action, resource, "with an explicit deny in an identity-based policy")
	default:
		return accessDenied(r, caller, action, resource, "because no identity-based policy allows the "+action+" action")
	}
}

func accessDenied(r *http.Request, caller, action, resource, why string) *awsapi.Error {
	msg := "User: " + caller + " is not authorized to perform: " + action + " on resource: " + resource + " " + why
	switch {
	case r.Header.Get("X-Amz-Target") != "":
		return &awsapi.Error{Code: "AccessDeniedException", Message: msg, Status: http.StatusBadRequest}
	case strings.HasPrefix(action, "ec2:"):
		return &awsapi.Error{Code: "UnauthorizedOperation", Message: "You are not authorized to perform this operation. " + msg, Status: http.StatusForbidden}
	}
	return &awsapi.Error{Code: "AccessDenied", Message: msg, Status: http.StatusForbidden}
}

// RequestContext is the global condition keys Gantry can state truthfully
// about a request: who signed it, from where, when, and for which region.
func RequestContext(r *http.Request, id *awsapi.Identity) map[string][]string {
	arn, typ, user := id.ARN, "Account", ""
	switch {
	case arn == "" || strings.HasSuffix(arn, ":root"):
		arn = "arn:aws:iam::" + id.Account + ":root"
	case strings.Contains(arn, ":user/"):
		typ, user = "User", arn[strings.LastIndex(arn, "/")+1:]
	case strings.Contains(arn, ":assumed-role/"):
		// aws:PrincipalArn of a role session is the role's ARN.
		parts := strings.Split(arn, "/")
		typ, arn = "AssumedRole", "arn:aws:iam::"+id.Account+":role/"+parts[len(parts)-2]
	}
	userID := id.UserID
	if userID == "" {
		userID = id.Account
	}
	ctx := principalContext(id.Account, arn, userID, typ, user)
	now := time.Now()
	ctx["aws:currenttime"] = []string{now.UTC().Format("2006-01-02T15:04:05Z")}
	ctx["aws:epochtime"] = []string{strconv.FormatInt(now.Unix(), 10)}
	ctx["aws:securetransport"] = []string{strconv.FormatBool(r.TLS != nil)}
	if id.Region != "" {
		ctx["aws:requestedregion"] = []string{id.Region}
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		ctx["aws:sourceip"] = []string{host}
	}
	return ctx
}

// foreignARN finds an ARN of another account among a request's top-level
// parameters (JSON fields, or Query form values): a cluster, task, secret,
// parameter, load balancer, ... named by ARN. Only 12-digit accounts count
// (AWS-managed ARNs say "aws" or nothing).
func foreignARN(account string, r *http.Request, body []byte) string {
	var candidates []string
	if r.Header.Get("X-Amz-Target") != "" || strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		var top map[string]json.RawMessage
		if json.Unmarshal(body, &top) == nil {
			for k, v := range top {
				if k := strings.ToLower(k); strings.HasSuffix(k, "rolearn") || k == "principalarn" {
					// Roles are passed (and checked when a task runs);
					// ECS's account settings judge principalArn themselves.
					continue
				}
				var one string
				var many []string
				if json.Unmarshal(v, &one) == nil {
					candidates = append(candidates, one)
				} else if json.Unmarshal(v, &many) == nil {
					candidates = append(candidates, many...)
				}
			}
		}
	} else if f, err := parseForm(body); err == nil {
		for k, vs := range f {
			if strings.HasSuffix(strings.ToLower(k), "rolearn") {
				continue
			}
			candidates = append(candidates, vs...)
		}
	}
	candidates = append(candidates, strings.Split(r.URL.Path, "/")...)
	for _, c := range candidates {
		if a := arnAccount(c); accountIDRe.MatchString(a) && a != account {
			return c
		}
	}
	return ""
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
// an ECS call, the secret or parameter named by ARN, the user or role of
// an IAM call, the role of AssumeRole; "*" otherwise.
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
	case "secretsmanager":
		var req struct{ SecretId string }
		if json.Unmarshal(body, &req) == nil && strings.HasPrefix(req.SecretId, "arn:") {
			return req.SecretId
		}
	case "ssm":
		var req struct{ Name string }
		if json.Unmarshal(body, &req) == nil && req.Name != "" {
			if strings.HasPrefix(req.Name, "arn:") {
				return req.Name
			}
			return "arn:aws:ssm:" + id.Region + ":" + id.Account + ":parameter/" + strings.TrimPrefix(req.Name, "/")
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
