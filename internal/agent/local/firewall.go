package local

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/firewall"
)

// bridgePrefix starts every Gantry bridge name (see netw.BridgeName).
const bridgePrefix = "gtr-"

// firewallTable names this agent's nftables table, keyed by the data
// directory like its bridges, so two servers on one host keep their own.
func firewallTable(dataDir string) string {
	abs, _ := filepath.Abs(dataDir)
	h := sha256.Sum256([]byte(abs))
	return "gantry-" + hex.EncodeToString(h[:5])
}

func (a *Agent) firewallPath() string { return filepath.Join(a.cfg.DataDir, "agent", "firewall.json") }

// SetFirewall stores the control plane's security-group state (so a
// restarted agent enforces it before hearing from the control plane) and
// applies it.
//
// The control plane sends an unchanged state again on each resync: that
// is when the table is reconciled (see firewall.Reconcile).
func (a *Agent) SetFirewall(ctx context.Context, st agent.FirewallState) error {
	a.fwMu.Lock()
	old, _ := json.Marshal(a.fwState)
	b, err := json.Marshal(st)
	resync := err == nil && bytes.Equal(old, b)
	if err == nil {
		tmp := a.firewallPath() + ".tmp"
		if err = os.WriteFile(tmp, b, 0o600); err == nil {
			err = os.Rename(tmp, a.firewallPath())
		}
	}
	if err == nil {
		a.fwState = st
	}
	a.fwMu.Unlock()
	if err != nil {
		return err
	}
	if resync {
		return a.syncFirewall(a.fw.Reconcile)
	}
	return a.applyFirewall()
}

func (a *Agent) loadFirewall() {
	b, err := os.ReadFile(a.firewallPath())
	if err != nil {
		return
	}
	if err := json.Unmarshal(b, &a.fwState); err != nil {
		a.log.Warn("ignoring unreadable firewall state", "err", err)
	}
}

// applyFirewall renders the stored state over the tasks whose networks
// exist on this host now. Called when the state changes and whenever a
// task's network comes or goes, so a task's rules are in place before its
// containers start and gone once it stopped.
func (a *Agent) applyFirewall() error { return a.syncFirewall(a.fw.Apply) }

func (a *Agent) syncFirewall(apply func(firewall.Config) error) error {
	a.fwMu.Lock()
	defer a.fwMu.Unlock()
	type local struct {
		ip     netip.Addr
		vpc    string
		groups []string
		public netip.Addr
	}
	here := map[string]*local{} // live tasks with a network on this host
	gone := map[string]bool{}   // tasks this host knows, without a network
	a.mu.Lock()
	for id, t := range a.tasks {
		rec := t.record()
		ip, err := netip.ParseAddr(func() string {
			if rec.Network != nil {
				return rec.Network.IPv4
			}
			return ""
		}())
		if err != nil || rec.Status.Phase == agent.PhaseStopped {
			gone[id] = true
			continue
		}
		here[id] = &local{ip: ip, vpc: rec.Spec.Network.VPCID, groups: rec.Spec.Network.SecurityGroupIDs}
	}
	a.mu.Unlock()

	cfg := firewall.Config{Groups: map[string]agent.FirewallGroup{}, Members: map[string][]netip.Addr{}, BridgePrefix: bridgePrefix}
	for _, g := range a.fwState.Groups {
		cfg.Groups[g.ID] = g
	}
	member := func(ip netip.Addr, groups []string) {
		for _, g := range groups {
			cfg.Members[g] = append(cfg.Members[g], ip)
		}
	}
	for _, ft := range a.fwState.Tasks {
		if l := here[ft.TaskID]; l != nil {
			// The control plane's view of the groups wins: it is newer
			// than the spec only if the model ever lets groups change.
			l.groups = ft.Groups
			l.public, _ = netip.ParseAddr(ft.PublicIPv4)
			continue
		}
		if gone[ft.TaskID] {
			continue
		}
		if ip, err := netip.ParseAddr(ft.IPv4); err == nil {
			member(ip, ft.Groups)
		}
	}
	for id, l := range here {
		member(l.ip, l.groups)
		cfg.Tasks = append(cfg.Tasks, firewall.Task{ID: id, IP: l.ip, Bridge: a.net.BridgeName(l.vpc), Groups: l.groups, PublicIP: l.public})
	}
	if err := apply(cfg); err != nil {
		return fmt.Errorf("security groups: %w", err)
	}
	a.efsNFSFirewallChanged()
	return nil
}
