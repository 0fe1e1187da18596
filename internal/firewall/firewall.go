// Package firewall enforces security groups and VPC isolation in the kernel
// with nftables. A host's whole state is one table of family ip, replaced
// atomically (delete and re-create in one netlink batch) on every change,
// so a packet sees either the old rules or the new, never a mix.
//
// Task traffic crosses the host's forward hook twice over: routed traffic
// (between subnets or VPCs, to the outside) as usual, and traffic between
// tasks on one bridge through br_netfilter (bridge-nf-call-iptables), which
// hands bridged IPv4 to the ip family's hooks with the bridge as both
// interfaces. Traffic from the host itself to a task (the gateway; health
// checks, the README's curl) leaves through the output hook and is not
// filtered, nor is traffic from a task to the host.
//
// The table:
//
//	chain forward (hook forward)
//	    ct state established,related accept        stateful, like AWS
//	    iifname B oifname "gtr-*" oifname != B drop  VPC isolation (and back)
//	    iifname B ip saddr vmap @out-B              task's egress chain
//	    iifname B drop                              not a known task
//	    goto to-task
//	chain to-task
//	    oifname B ip daddr vmap @in-B               task's ingress chain
//	    oifname B drop
//	chain out-<task>: a rule per allowed destination, "goto to-task"; drop
//	chain in-<task>:  a rule per allowed source, accept; drop
//	set sg-<group>:   the addresses of the group's members (source groups)
package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/mdlayher/netlink"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"

	"github.com/gantry-dev/gantry/internal/agent"
)

// Task is a task on this host as the firewall needs it.
type Task struct {
	ID     string
	IP     netip.Addr
	Bridge string // the host bridge of its VPC
	Groups []string
}

// Config is the desired state of one host.
type Config struct {
	Tasks []Task
	// Groups holds the rules of every group a task here is in.
	Groups map[string]agent.FirewallGroup
	// Members are the addresses of each group's tasks, on any host: what
	// a rule naming a source group matches.
	Members map[string][]netip.Addr
	// BridgePrefix names every Gantry bridge on the host (any server's):
	// traffic between two of them is traffic between VPCs.
	BridgePrefix string
}

// Firewall owns one nftables table.
type Firewall struct {
	Table string
	mu    sync.Mutex
}

// New returns the firewall for table (keep it unique per server on a host).
func New(table string) *Firewall { return &Firewall{Table: table} }

// conn opens a netlink connection with a receive buffer large enough for
// the kernel's answers to a whole-table batch: with a hundred tasks the
// default buffer overflows (ENOBUFS) and the batch is lost. Root sets it
// past rmem_max (SO_RCVBUFFORCE).
func conn() (*nftables.Conn, error) {
	return nftables.New(nftables.WithSockOptions(func(c *netlink.Conn) error {
		return c.SetReadBuffer(16 << 20)
	}))
}

// Apply replaces the table with cfg's rules; with no tasks it removes it.
func (f *Firewall) Apply(cfg Config) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(cfg.Tasks) == 0 {
		return f.remove()
	}
	if err := bridgeNetfilter(); err != nil {
		return err
	}
	c, err := conn()
	if err != nil {
		return err
	}
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: f.Table}
	// Added first so the delete cannot fail on a missing table.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	if err := render(c, t, cfg); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables table %s: %w", f.Table, err)
	}
	return nil
}

// Remove deletes the table; it is a no-op when there is none.
func (f *Firewall) Remove() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.remove()
}

func (f *Firewall) remove() error {
	c, err := conn()
	if err != nil {
		return err
	}
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: f.Table}
	c.AddTable(t)
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("remove nftables table %s: %w", f.Table, err)
	}
	return nil
}

// bridgeNetfilter makes bridged IPv4 traverse the ip family's hooks;
// without it tasks on one bridge would talk past every rule.
func bridgeNetfilter() error {
	const p = "/proc/sys/net/bridge/bridge-nf-call-iptables"
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("security groups need br_netfilter (modprobe br_netfilter): %w", err)
	}
	if strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	return os.WriteFile(p, []byte("1"), 0o644)
}

func render(c *nftables.Conn, t *nftables.Table, cfg Config) error {
	accept := nftables.ChainPolicyAccept
	fwd := c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	ingress := c.AddChain(&nftables.Chain{Name: "to-task", Table: t})

	// Sets of source-group members, for the groups some rule names.
	sets := map[string]*nftables.Set{}
	for _, g := range cfg.Groups {
		for _, r := range slices.Concat(g.Ingress, g.Egress) {
			for _, id := range r.Groups {
				if sets[id] != nil {
					continue
				}
				s := &nftables.Set{Table: t, Name: id, KeyType: nftables.TypeIPAddr}
				var els []nftables.SetElement
				seen := map[netip.Addr]bool{}
				for _, a := range cfg.Members[id] {
					if a.Is4() && !seen[a] {
						seen[a] = true
						els = append(els, nftables.SetElement{Key: a.AsSlice()})
					}
				}
				if err := c.AddSet(s, els); err != nil {
					return err
				}
				sets[id] = s
			}
		}
	}

	var bridges []string
	byBridge := map[string][]Task{}
	for _, tk := range cfg.Tasks {
		if !tk.IP.Is4() || tk.Bridge == "" {
			continue
		}
		if byBridge[tk.Bridge] == nil {
			bridges = append(bridges, tk.Bridge)
		}
		byBridge[tk.Bridge] = append(byBridge[tk.Bridge], tk)
	}
	slices.Sort(bridges)

	rule := func(ch *nftables.Chain, e ...expr.Any) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: e})
	}
	mask := binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED)
	rule(fwd,
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
		verdict(expr.VerdictAccept))
	if cfg.BridgePrefix != "" {
		for _, b := range bridges {
			for _, dir := range [][2]expr.MetaKey{{expr.MetaKeyIIFNAME, expr.MetaKeyOIFNAME}, {expr.MetaKeyOIFNAME, expr.MetaKeyIIFNAME}} {
				rule(fwd,
					&expr.Meta{Key: dir[0], Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(b)},
					&expr.Meta{Key: dir[1], Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(cfg.BridgePrefix)},
					&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(b)},
					verdict(expr.VerdictDrop))
			}
		}
	}

	for _, b := range bridges {
		outMap := &nftables.Set{Table: t, Name: "out-" + b, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeVerdict, IsMap: true}
		inMap := &nftables.Set{Table: t, Name: "in-" + b, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeVerdict, IsMap: true}
		var outEls, inEls []nftables.SetElement
		for _, tk := range byBridge[b] {
			out := c.AddChain(&nftables.Chain{Name: "out-" + tk.ID, Table: t})
			in := c.AddChain(&nftables.Chain{Name: "in-" + tk.ID, Table: t})
			for _, gid := range tk.Groups {
				g, ok := cfg.Groups[gid]
				if !ok {
					continue
				}
				for _, r := range g.Egress {
					for _, m := range matches(r, offDst, sets) {
						rule(out, append(m, &expr.Verdict{Kind: expr.VerdictGoto, Chain: ingress.Name})...)
					}
				}
				for _, r := range g.Ingress {
					for _, m := range matches(r, offSrc, sets) {
						rule(in, append(m, verdict(expr.VerdictAccept))...)
					}
				}
			}
			rule(out, verdict(expr.VerdictDrop))
			rule(in, verdict(expr.VerdictDrop))
			outEls = append(outEls, nftables.SetElement{Key: tk.IP.AsSlice(), VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: out.Name}})
			inEls = append(inEls, nftables.SetElement{Key: tk.IP.AsSlice(), VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: in.Name}})
		}
		if err := c.AddSet(outMap, outEls); err != nil {
			return err
		}
		if err := c.AddSet(inMap, inEls); err != nil {
			return err
		}
		rule(fwd, append(iface(expr.MetaKeyIIFNAME, b), loadAddr(offSrc), vmap(outMap))...)
		rule(fwd, append(iface(expr.MetaKeyIIFNAME, b), verdict(expr.VerdictDrop))...)
		rule(ingress, append(iface(expr.MetaKeyOIFNAME, b), loadAddr(offDst), vmap(inMap))...)
		rule(ingress, append(iface(expr.MetaKeyOIFNAME, b), verdict(expr.VerdictDrop))...)
	}
	rule(fwd, &expr.Verdict{Kind: expr.VerdictGoto, Chain: ingress.Name})
	return nil
}

// Offsets of the IPv4 source and destination address.
const (
	offSrc = 12
	offDst = 16
)

// matches turns one rule into the expressions of one nftables rule per
// peer (CIDR or source group), without the verdict. A rule Gantry cannot
// express (an unknown protocol) matches nothing, which is the safe side.
func matches(r agent.FirewallRule, peerOff uint32, sets map[string]*nftables.Set) [][]expr.Any {
	l4, err := protoMatch(r)
	if err != nil {
		return nil
	}
	var out [][]expr.Any
	for _, cidr := range r.CIDRs {
		p, err := netip.ParsePrefix(cidr)
		if err != nil || !p.Addr().Is4() {
			continue
		}
		p = p.Masked()
		var e []expr.Any
		if p.Bits() > 0 {
			e = append(e, loadAddr(peerOff))
			if p.Bits() < 32 {
				m := binary.BigEndian.AppendUint32(nil, ^uint32(0)<<(32-p.Bits()))
				e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: m, Xor: make([]byte, 4)})
			}
			e = append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()})
		}
		out = append(out, append(e, l4...))
	}
	for _, id := range r.Groups {
		s := sets[id]
		if s == nil {
			continue
		}
		e := []expr.Any{loadAddr(peerOff), &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID}}
		out = append(out, append(e, l4...))
	}
	return out
}

// protoMatch is the protocol and port part of a rule.
func protoMatch(r agent.FirewallRule) ([]expr.Any, error) {
	var proto int
	switch p := strings.ToLower(r.Protocol); p {
	case "-1", "all", "":
		return nil, nil
	case "tcp":
		proto = 6
	case "udp":
		proto = 17
	case "icmp":
		proto = 1
	default:
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 255 {
			return nil, fmt.Errorf("protocol %q", r.Protocol)
		}
		proto = n
	}
	e := []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(proto)}}}
	from, to := int32(-1), int32(-1)
	if r.FromPort != nil {
		from = *r.FromPort
	}
	if r.ToPort != nil {
		to = *r.ToPort
	}
	switch proto {
	case 6, 17:
		if from < 0 || to < 0 || (from == 0 && to == 65535) {
			return e, nil
		}
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
		if from == to {
			return append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(uint16(from))}), nil
		}
		return append(e, &expr.Range{Op: expr.CmpOpEq, Register: 1,
			FromData: binaryutil.BigEndian.PutUint16(uint16(from)), ToData: binaryutil.BigEndian.PutUint16(uint16(to))}), nil
	case 1:
		// For ICMP, FromPort is the type and ToPort the code.
		if from >= 0 {
			e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(from)}})
			if to >= 0 {
				e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 1, Len: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(to)}})
			}
		}
	}
	return e, nil
}

func loadAddr(off uint32) expr.Any {
	return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4}
}

func vmap(s *nftables.Set) expr.Any {
	return &expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: s.Name, SetID: s.ID}
}

func iface(key expr.MetaKey, name string) []expr.Any {
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(name)}}
}

func verdict(k expr.VerdictKind) expr.Any { return &expr.Verdict{Kind: k} }

// ifname is an interface name as the kernel compares it: NUL-padded.
func ifname(n string) []byte {
	b := make([]byte, 16)
	copy(b, n)
	return b
}

// ErrNoTable is returned by Count when the table does not exist.
var ErrNoTable = errors.New("no such table")

// Count returns how many rules and set elements the table holds, for
// tests and leak checks.
func (f *Firewall) Count() (rules, elements int, err error) {
	c, err := conn()
	if err != nil {
		return 0, 0, err
	}
	t, err := c.ListTableOfFamily(f.Table, nftables.TableFamilyIPv4)
	if err != nil {
		return 0, 0, ErrNoTable
	}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return 0, 0, err
	}
	for _, ch := range chains {
		if ch.Table.Name != t.Name {
			continue
		}
		rs, err := c.GetRules(t, ch)
		if err != nil {
			return 0, 0, err
		}
		rules += len(rs)
	}
	sets, err := c.GetSets(t)
	if err != nil {
		return 0, 0, err
	}
	for _, s := range sets {
		els, err := c.GetSetElements(s)
		if err != nil {
			return 0, 0, err
		}
		elements += len(els)
	}
	return rules, elements, nil
}
