package ecs

import (
	"testing"

	"github.com/gantry-dev/gantry/internal/agent"
)

// The server's default isolation on hosts with and without sandboxes:
// sandbox (the flag's default, also when empty) never turns into container
// by itself; only auto does, and the reason always comes back for the log.
func TestResolveDefaultIsolation(t *testing.T) {
	both := agent.HostInfo{Isolations: []string{agent.IsolationContainer, agent.IsolationSandbox}}
	noSandbox := agent.HostInfo{Isolations: []string{agent.IsolationContainer}, SandboxUnavailable: "runsc is missing"}
	for _, c := range []struct {
		want      string
		host      agent.HostInfo
		isolation string
		why       string
	}{
		{"", both, "sandbox", ""},
		{"sandbox", both, "sandbox", ""},
		{"container", both, "container", ""},
		{"auto", both, "sandbox", ""},
		{"", noSandbox, "sandbox", "runsc is missing"},
		{"sandbox", noSandbox, "sandbox", "runsc is missing"},
		{"container", noSandbox, "container", "runsc is missing"},
		{"auto", noSandbox, "container", "runsc is missing"},
		{"auto", agent.HostInfo{Isolations: []string{agent.IsolationContainer}}, "container", "the host's agent does not offer it"},
	} {
		isolation, why, err := ResolveDefaultIsolation(c.want, c.host)
		if err != nil || isolation != c.isolation || why != c.why {
			t.Errorf("%q on %v: %q %q %v, want %q %q", c.want, c.host.Isolations, isolation, why, err, c.isolation, c.why)
		}
	}
	if _, _, err := ResolveDefaultIsolation("vm", both); err == nil {
		t.Error("vm: no error")
	}
}
