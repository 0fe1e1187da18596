package efs

// What a file system policy lets an NFS client do, decided when a task
// mounts a volume, as EFS decides when a client connects: ClientMount to
// mount at all (read-only), ClientWrite to write, ClientRootAccess for
// uid 0 to stay root (without it EFS squashes root to 65534).

import (
	"fmt"

	"github.com/gantry-dev/gantry/internal/iam"
)

// The client actions of a file system policy.
const (
	ActionClientMount      = "elasticfilesystem:ClientMount"
	ActionClientWrite      = "elasticfilesystem:ClientWrite"
	ActionClientRootAccess = "elasticfilesystem:ClientRootAccess"
)

// Client is an NFS client as a file system policy sees it.
type Client struct {
	// Account is the file system's (and the task's) account.
	Account string
	// Principal is the IAM role the client mounts with (iam ENABLED in
	// ECS: the task role), "" for an anonymous client. RolePolicies are
	// that role's identity-based policies: an Allow there counts as
	// much as one in the file system policy.
	Principal    string
	RolePolicies []*iam.Policy
	// AccessPointARN is the access point mounted through, if any.
	AccessPointARN string
	// SecureTransport: the mount uses TLS (transitEncryption ENABLED).
	SecureTransport bool
}

// ClientAccess is what the client may do.
type ClientAccess struct {
	Mount, Write, Root bool
}

// All is the default file system policy's answer: anything, to any
// client that reaches a mount target.
var All = ClientAccess{Mount: true, Write: true, Root: true}

// DecideClientAccess evaluates the file system's policy (fileSystemARN,
// policy "" for the default one) for c.
func DecideClientAccess(fileSystemARN, policy string, c Client) (ClientAccess, error) {
	if policy == "" {
		return All, nil
	}
	p, err := iam.ParseResourcePolicy(policy)
	if err != nil {
		return ClientAccess{}, fmt.Errorf("file system policy of %s: %w", fileSystemARN, err)
	}
	ctx := c.context()
	allowed := func(action string) bool {
		req := iam.Request{Action: action, Resource: fileSystemARN, Context: ctx}
		rd := p.EvaluateResource(c.Principal, c.Account, req)
		id := iam.ImplicitDeny
		if c.Principal != "" {
			id = iam.EvaluateRequest(c.RolePolicies, req)
		}
		if rd == iam.ExplicitDeny || id == iam.ExplicitDeny {
			return false
		}
		return rd == iam.Allow || id == iam.Allow
	}
	return ClientAccess{
		Mount: allowed(ActionClientMount),
		Write: allowed(ActionClientWrite),
		Root:  allowed(ActionClientRootAccess),
	}, nil
}

// context is the request's condition keys (lower case, as iam.Request
// wants them): those AWS's sample file system policies use, and the
// principal's.
func (c Client) context() map[string][]string {
	ctx := map[string][]string{
		// Every task mounts through a mount target: Gantry has no other
		// way (AWS's would be e.g. AWS Transfer Family or Backup).
		"elasticfilesystem:accessedviamounttarget": {"true"},
		"aws:securetransport":                      {fmt.Sprint(c.SecureTransport)},
	}
	if c.AccessPointARN != "" {
		ctx["elasticfilesystem:accesspointarn"] = []string{c.AccessPointARN}
	}
	if c.Principal != "" {
		ctx["aws:principalarn"] = []string{c.Principal}
		ctx["aws:principalaccount"] = []string{c.Account}
		ctx["aws:principaltype"] = []string{"AssumedRole"}
	}
	return ctx
}

// DeniedMountMessage is what amazon-efs-utils' mount.nfs4 prints when the
// server refuses the mount: over TLS (stunnel) it mounts 127.0.0.1, else
// the file system's DNS name.
func DeniedMountMessage(fileSystemID, region, root string, tls bool) string {
	host := fileSystemID + ".efs." + region + ".amazonaws.com"
	if tls {
		host = "127.0.0.1"
	}
	if root == "" {
		root = "/"
	}
	return "mount.nfs4: access denied by server while mounting " + host + ":" + root
}
