package images

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/remotes/docker"
)

// LocalRegistry is the registry Gantry serves itself (internal/registry).
// Pulls from it go over plain HTTP to Addr with a fresh token, whichever
// of its names the image uses: Addr itself, or the ECR-style
// ACCOUNT.dkr.ecr.REGION.amazonaws.com of the local account, which does
// not resolve to this host.
type LocalRegistry struct {
	Addr  string          // HOST:PORT the registry listens on
	Names map[string]bool // other hosts that mean this registry
	// Credentials returns the user and a currently valid password.
	Credentials func() (user, secret string)
}

var localRegistry atomic.Pointer[LocalRegistry]

// SetLocalRegistry routes pulls of the local registry's names to it (nil:
// no local registry). The server calls it once at start.
func SetLocalRegistry(r *LocalRegistry) { localRegistry.Store(r) }

// withLocalRegistry answers for the local registry's hosts and leaves the
// others to next.
func withLocalRegistry(next docker.RegistryHosts) docker.RegistryHosts {
	return func(host string) ([]docker.RegistryHost, error) {
		lr := localRegistry.Load()
		if lr == nil || (host != lr.Addr && !lr.Names[host]) {
			return next(host)
		}
		// Our own registry on loopback: a stall is a bug, not a slow network.
		client := &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: 30 * time.Second}}
		auth := docker.NewDockerAuthorizer(docker.WithAuthClient(client), docker.WithAuthCreds(func(string) (string, string, error) {
			u, p := lr.Credentials()
			return u, p, nil
		}))
		return []docker.RegistryHost{{
			Client:       client,
			Authorizer:   auth,
			Host:         lr.Addr,
			Scheme:       "http",
			Path:         "/v2",
			Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve,
		}}, nil
	}
}
