package local

// Security groups of the mount targets this host serves. A task reaches
// a mount target's address on its VPC bridge, which is the host's own
// address: that traffic meets the input hook, not the forward hook where
// the tasks' groups are enforced (internal/firewall), so the served
// addresses get a table of their own, `ip gantry-<hash>-efs`, rebuilt whole
// (a handful of rules per mount target) whenever the served addresses or
// the security-group state change:
//
//	chain input (hook input, policy accept)
//	    ip daddr MT ct state established,related accept
//	    ip daddr MT ip saddr <allowed> tcp dport 2049 accept   per source
//	    ip daddr MT drop                                       nothing else
//
// The allowed sources are those of the mount target's groups' ingress
// rules that cover TCP 2049: their CIDRs, and the addresses of the tasks
// in their source groups. As on AWS, a change does not cut connections
// already made.

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/efsnfs"
)

var nfsFwMu sync.Mutex

// servedTarget is a mount target address served here and its groups.
type servedTarget struct {
	ip     netip.Addr
	groups []string
}

// efsNFSFirewall renders the table for the mount targets served now.
func (a *Agent) efsNFSFirewall() error {
	nfsFwMu.Lock()
	defer nfsFwMu.Unlock()
	nfsMu.Lock()
	var targets []servedTarget
	for ip, s := range nfsServers {
		if addr, err := netip.ParseAddr(ip); err == nil {
			targets = append(targets, servedTarget{ip: addr, groups: s.groups})
		}
	}
	nfsMu.Unlock()
	slices.SortFunc(targets, func(x, y servedTarget) int { return x.ip.Compare(y.ip) })

	a.fwMu.Lock()
	st := a.fwState
	a.fwMu.Unlock()
	groups := map[string]agent.FirewallGroup{}
	for _, g := range st.Groups {
		groups[g.ID] = g
	}
	members := map[string][]netip.Addr{}
	local := map[string]bool{}
	a.mu.Lock()
	for id, t := range a.tasks {
		rec := t.record()
		if rec.Network == nil || rec.Status.Phase == agent.PhaseStopped {
			continue
		}
		ip, err := netip.ParseAddr(rec.Network.IPv4)
		if err != nil {
			continue
		}
		local[id] = true
		for _, g := range rec.Spec.Network.SecurityGroupIDs {
			members[g] = append(members[g], ip)
		}
	}
	a.mu.Unlock()
	for _, ft := range st.Tasks {
		if ip, err := netip.ParseAddr(ft.IPv4); err == nil && !local[ft.TaskID] {
			for _, g := range ft.Groups {
				members[g] = append(members[g], ip)
			}
		}
	}

	table := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: firewallTable(a.cfg.DataDir) + "-efs"}
	c, err := nftables.New()
	if err != nil {
		return err
	}
	if old, _ := c.ListTableOfFamily(table.Name, nftables.TableFamilyIPv4); old != nil {
		c.DelTable(old)
	}
	if len(targets) > 0 {
		c.AddTable(table)
		accept := nftables.ChainPolicyAccept
		ch := c.AddChain(&nftables.Chain{Name: "input", Table: table, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
		for _, t := range targets {
			dst := []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: t.ip.AsSlice()},
			}
			c.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: append(slices.Clone(dst),
				&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
					Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: make([]byte, 4)},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
				&expr.Verdict{Kind: expr.VerdictAccept})})
			for _, p := range nfsSources(t.groups, groups, members) {
				m := netipMask(p.Bits())
				c.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: append(slices.Clone(dst),
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
					&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: m, Xor: make([]byte, 4)},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()},
					&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(efsnfs.Port)},
					&expr.Verdict{Kind: expr.VerdictAccept})})
			}
			c.AddRule(&nftables.Rule{Table: table, Chain: ch, Exprs: append(slices.Clone(dst), &expr.Verdict{Kind: expr.VerdictDrop})})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("mount target security groups: %w", err)
	}
	return nil
}

func netipMask(bits int) []byte {
	m := make([]byte, 4)
	for i := range bits {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

// nfsSources are the source prefixes the groups' ingress rules let reach
// TCP port 2049.
func nfsSources(ids []string, groups map[string]agent.FirewallGroup, members map[string][]netip.Addr) []netip.Prefix {
	seen := map[netip.Prefix]bool{}
	var out []netip.Prefix
	add := func(p netip.Prefix) {
		if p.Addr().Is4() && !seen[p.Masked()] {
			seen[p.Masked()] = true
			out = append(out, p.Masked())
		}
	}
	for _, id := range ids {
		for _, r := range groups[id].Ingress {
			if !coversNFS(r) {
				continue
			}
			for _, cidr := range r.CIDRs {
				if p, err := netip.ParsePrefix(cidr); err == nil {
					add(p)
				}
			}
			for _, g := range r.Groups {
				for _, ip := range members[g] {
					add(netip.PrefixFrom(ip, 32))
				}
			}
		}
	}
	slices.SortFunc(out, func(x, y netip.Prefix) int { return x.Addr().Compare(y.Addr()) })
	return out
}

func coversNFS(r agent.FirewallRule) bool {
	switch r.Protocol {
	case "-1", "all":
		return true
	case "tcp", "6":
	default:
		return false
	}
	if r.FromPort == nil || r.ToPort == nil {
		return true
	}
	return *r.FromPort <= efsnfs.Port && efsnfs.Port <= *r.ToPort
}

// efsNFSFirewallChanged re-renders the mount targets' table after the
// security-group state or the tasks here changed (the caller holds the
// firewall's lock, which rendering takes).
func (a *Agent) efsNFSFirewallChanged() {
	if a.cfg.EFSMode != "nfs" {
		return
	}
	go func() {
		if err := a.efsNFSFirewall(); err != nil {
			a.log.Warn("mount target security groups", "err", err)
		}
	}()
}
