// Package firewall enforces security groups and VPC isolation in the kernel
// with nftables, in one table of family ip per server.
//
// The first Apply after start-up (and any Apply after a failed one) builds
// the table whole: delete and re-create in one netlink batch. Later Applys
// compare the new state with what the kernel was last given and send only
// the difference (a task's chains and map elements, a group's members, the
// chains of tasks whose groups changed), again as one batch: the kernel
// commits a batch atomically, so a packet sees either the old rules or the
// new, never a mix, and a task start costs the same with 1 or 500 tasks.
//
// Task traffic crosses the host's forward hook twice over: routed traffic
// (between subnets or VPCs, to the outside) as usual, and traffic between
// tasks on one bridge through br_netfilter (bridge-nf-call-iptables), which
// hands bridged IPv4 to the ip family's hooks with the bridge as both
// interfaces. Traffic from the host itself to a task's private address (the
// gateway; health checks, the README's curl) leaves through the output hook
// and is not filtered, nor is traffic from a task to the host.
//
// Everything that grows with tasks or bridges hangs off verdict maps, so
// adding one never means reordering rules:
//
//	chain forward (hook forward)
//	    ct state established,related accept        stateful, like AWS
//	    iifname vmap @from                         bridge -> goto from-B
//	    goto to-task
//	chain from-B
//	    oifname "gtr-*" oifname != B drop          VPC isolation
//	    ip saddr vmap @out-B                       task's egress chain
//	    drop                                       not a known task
//	chain to-task
//	    oifname vmap @to                           bridge -> goto to-B
//	chain to-B
//	    iifname "gtr-*" iifname != B drop          VPC isolation, inbound
//	    ip daddr vmap @in-B                        task's ingress chain
//	    drop
//	chain out-<task>: a rule per allowed destination, "goto to-task"; drop
//	chain in-<task>:  a rule per allowed source, accept; drop
//	set <group>:      the addresses of the group's members (source groups)
//
// A task with a public address adds an element to map public (public ->
// private) used by dnat in the prerouting and output nat hooks, and one to
// map pub-in (public -> goto in-<task>): the host's own connections to a
// public address meet the task's ingress rules in the output hook, before
// dnat, found by the public address since the private addresses of two
// VPCs may be the same.
package firewall

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"

	"github.com/gantry-dev/gantry/internal/agent"
)

// Task is a task on this host as the firewall needs it.
type Task struct {
	ID     string
	IP     netip.Addr
	Bridge string // the host bridge of its VPC
	Groups []string
	// PublicIP, when valid, is the task's public address: traffic to it
	// is forwarded to IP, under the task's ingress rules.
	PublicIP netip.Addr
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
	// NetNS, when not 0, is an open file of the network namespace to
	// work in (benchmarks use their own); 0 is the caller's.
	NetNS int
	mu    sync.Mutex
	// cur is what the kernel was last given; nil means unknown (start-up,
	// or the last batch failed), so the next Apply rebuilds the table.
	cur *snapshot
	// Rebuilds and Updates count whole-table and incremental batches, for
	// tests and benchmarks.
	Rebuilds, Updates int
	lastRebuild       time.Time
}

// ReconcileEvery is how often Reconcile rebuilds the table whole.
const ReconcileEvery = 5 * time.Minute

// New returns the firewall for table (keep it unique per server on a host).
func New(table string) *Firewall { return &Firewall{Table: table} }

// conn opens a netlink connection with buffers large enough for a
// whole-table batch: it goes out as one message, which past the default
// send buffer fails (EMSGSIZE, at about 150 tasks), and the kernel's
// answers to it overflow the default receive buffer (ENOBUFS). Root sets
// them past wmem_max and rmem_max (SO_SNDBUFFORCE, SO_RCVBUFFORCE).
func (f *Firewall) conn() (*nftables.Conn, error) {
	opts := []nftables.ConnOption{nftables.WithSockOptions(func(c *netlink.Conn) error {
		if err := c.SetWriteBuffer(64 << 20); err != nil {
			return err
		}
		return c.SetReadBuffer(16 << 20)
	})}
	if f.NetNS != 0 {
		opts = append(opts, nftables.WithNetNSFd(f.NetNS))
	}
	return nftables.New(opts...)
}

// snapshot is a Config reduced to what decides the table's contents.
type snapshot struct {
	prefix  string
	bridges map[string]bool
	tasks   map[string]taskSnap
	sets    map[string]map[netip.Addr]bool // source groups' members
	groups  map[string]agent.FirewallGroup
}

type taskSnap struct {
	Task
	rules string // the rules its chains hold, as a comparable key
}

func (s *snapshot) empty() bool { return len(s.tasks) == 0 }

func snap(cfg Config) *snapshot {
	s := &snapshot{prefix: cfg.BridgePrefix, bridges: map[string]bool{}, tasks: map[string]taskSnap{},
		sets: map[string]map[netip.Addr]bool{}, groups: cfg.Groups}
	for _, g := range cfg.Groups {
		for _, r := range slices.Concat(g.Ingress, g.Egress) {
			for _, id := range r.Groups {
				if s.sets[id] != nil {
					continue
				}
				m := map[netip.Addr]bool{}
				for _, a := range cfg.Members[id] {
					if a.Is4() {
						m[a] = true
					}
				}
				s.sets[id] = m
			}
		}
	}
	for _, tk := range cfg.Tasks {
		if !tk.IP.Is4() || tk.Bridge == "" {
			continue
		}
		if !tk.PublicIP.Is4() {
			tk.PublicIP = netip.Addr{}
		}
		var gs []agent.FirewallGroup
		for _, id := range tk.Groups {
			if g, ok := cfg.Groups[id]; ok {
				gs = append(gs, g)
			}
		}
		key, _ := json.Marshal(gs)
		s.tasks[tk.ID] = taskSnap{Task: tk, rules: string(key)}
		s.bridges[tk.Bridge] = true
	}
	return s
}

// Apply makes the table hold cfg's rules; with no tasks it removes it.
// It sends only the difference from the last Apply; after a failure, and
// the first time, it rebuilds the table whole.
func (f *Firewall) Apply(cfg Config) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	want := snap(cfg)
	if want.empty() {
		f.cur = nil
		return f.remove()
	}
	if f.cur != nil && f.cur.prefix == want.prefix {
		err := f.update(f.cur, want)
		if err == nil {
			f.Updates++
			f.cur = want
			return nil
		}
		// The kernel's table is not what we thought (someone flushed
		// it, or a bug): start over from nothing.
		f.cur = nil
	}
	return f.rebuild(want)
}

// Rebuild replaces the table whole with cfg's rules, whatever the last
// Apply left: for a reconcile that must not trust the kernel's state.
func (f *Firewall) Rebuild(cfg Config) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cur = nil
	want := snap(cfg)
	if want.empty() {
		return f.remove()
	}
	return f.rebuild(want)
}

// Reconcile is Apply for a periodic resync: at most every ReconcileEvery
// it rebuilds the table whole instead, so a change made behind Gantry's
// back (a chain flushed by hand) does not outlive the next reconcile; an
// incremental update trusts the kernel to hold what it was last given.
func (f *Firewall) Reconcile(cfg Config) error {
	f.mu.Lock()
	due := time.Since(f.lastRebuild) >= ReconcileEvery
	f.mu.Unlock()
	if due {
		return f.Rebuild(cfg)
	}
	return f.Apply(cfg)
}

func (f *Firewall) rebuild(want *snapshot) error {
	if err := bridgeNetfilter(); err != nil {
		return err
	}
	c, err := f.conn()
	if err != nil {
		return err
	}
	b := f.batch(c)
	// Added first so the delete cannot fail on a missing table.
	c.AddTable(b.t)
	c.DelTable(b.t)
	c.AddTable(b.t)
	if err := b.base(); err != nil {
		return err
	}
	if err := b.diff(&snapshot{bridges: map[string]bool{}, tasks: map[string]taskSnap{}, sets: map[string]map[netip.Addr]bool{}}, want); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables table %s: %w", f.Table, err)
	}
	f.Rebuilds++
	f.lastRebuild = time.Now()
	f.cur = want
	return nil
}

func (f *Firewall) update(cur, want *snapshot) error {
	c, err := f.conn()
	if err != nil {
		return err
	}
	b := f.batch(c)
	if err := b.diff(cur, want); err != nil {
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
	f.cur = nil
	return f.remove()
}

func (f *Firewall) remove() error {
	c, err := f.conn()
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

// batch collects one netlink batch against the table.
type batch struct {
	c *nftables.Conn
	t *nftables.Table
	// Sets created in this batch, so rules can name them by id too.
	newSets map[string]*nftables.Set
}

func (f *Firewall) batch(c *nftables.Conn) *batch {
	return &batch{c: c, t: &nftables.Table{Family: nftables.TableFamilyIPv4, Name: f.Table}, newSets: map[string]*nftables.Set{}}
}

// Names of the fixed parts.
const (
	mapFrom   = "from"
	mapTo     = "to"
	mapPublic = "public"
	mapPubIn  = "pub-in"
	chainTo   = "to-task"
)

func (b *batch) rule(ch string, e ...expr.Any) {
	b.c.AddRule(&nftables.Rule{Table: b.t, Chain: &nftables.Chain{Name: ch, Table: b.t}, Exprs: e})
}

func (b *batch) chain(name string) { b.c.AddChain(&nftables.Chain{Name: name, Table: b.t}) }

func (b *batch) dropChain(name string) {
	ch := &nftables.Chain{Name: name, Table: b.t}
	b.c.FlushChain(ch)
	b.c.DelChain(ch)
}

func (b *batch) set(name string) *nftables.Set {
	if s := b.newSets[name]; s != nil {
		return s
	}
	return &nftables.Set{Table: b.t, Name: name}
}

func (b *batch) addSet(s *nftables.Set, els []nftables.SetElement) error {
	s.Table = b.t
	if err := b.c.AddSet(s, els); err != nil {
		return err
	}
	b.newSets[s.Name] = s
	return nil
}

// base adds what every table has: the hooked chains and the maps that
// lead from them to bridges and tasks.
func (b *batch) base() error {
	accept := nftables.ChainPolicyAccept
	for _, s := range []*nftables.Set{
		// Interface names are strings, kept in host order: without saying
		// so, nft prints the keys as "".
		{Name: mapFrom, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian, DataType: nftables.TypeVerdict, IsMap: true},
		{Name: mapTo, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian, DataType: nftables.TypeVerdict, IsMap: true},
		{Name: mapPublic, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeIPAddr, IsMap: true},
		{Name: mapPubIn, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeVerdict, IsMap: true},
	} {
		if err := b.addSet(s, nil); err != nil {
			return err
		}
	}
	b.c.AddChain(&nftables.Chain{Name: "forward", Table: b.t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	b.chain(chainTo)
	established := []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
		verdict(expr.VerdictAccept),
	}
	b.rule("forward", established...)
	b.rule("forward", &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, b.vmap(mapFrom))
	b.rule("forward", &expr.Verdict{Kind: expr.VerdictGoto, Chain: chainTo})
	b.rule(chainTo, &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}, b.vmap(mapTo))

	// Public addresses: dnat the first packet of each connection, from
	// outside (prerouting) and from the host (output).
	for _, h := range []struct {
		name string
		hook *nftables.ChainHook
	}{{"pub-prerouting", nftables.ChainHookPrerouting}, {"pub-output", nftables.ChainHookOutput}} {
		b.c.AddChain(&nftables.Chain{Name: h.name, Table: b.t, Type: nftables.ChainTypeNAT,
			Hooknum: h.hook, Priority: nftables.ChainPriorityNATDest, Policy: &accept})
		s := b.set(mapPublic)
		b.rule(h.name, loadAddr(offDst),
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: s.Name, SetID: s.ID},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(nftables.TableFamilyIPv4), RegAddrMin: 1})
	}
	// The host's own connections to a public address meet the task's
	// ingress rules here (forwarded ones meet them in to-B, after dnat).
	// The chain runs after conntrack (-200) and before dnat (-100): the
	// destination is still the public address, which unlike a private one
	// names one task even when two VPCs' ranges overlap.
	b.c.AddChain(&nftables.Chain{Name: "pub-host", Table: b.t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityRef(-150), Policy: &accept})
	b.rule("pub-host", established...)
	b.rule("pub-host", loadAddr(offDst), b.vmap(mapPubIn))
	return nil
}

func (b *batch) vmap(name string) expr.Any {
	s := b.set(name)
	return &expr.Lookup{SourceRegister: 1, DestRegister: 0, IsDestRegSet: true, SetName: s.Name, SetID: s.ID}
}

func gotoEl(key []byte, chain string) nftables.SetElement {
	return nftables.SetElement{Key: key, VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: chain}}
}

// diff adds to the batch what turns the table from cur into want. The
// order matters within a batch: what a rule or element names must exist
// before it, and must lose its last reference before it goes.
func (b *batch) diff(cur, want *snapshot) error {
	// 1. New source-group sets, so new rules can look them up.
	for id, m := range want.sets {
		if cur.sets[id] == nil {
			if err := b.addSet(&nftables.Set{Name: id, KeyType: nftables.TypeIPAddr}, elements(m, nil)); err != nil {
				return err
			}
		}
	}
	// 2. New bridges.
	for br := range want.bridges {
		if cur.bridges[br] {
			continue
		}
		for _, s := range []*nftables.Set{
			{Name: "out-" + br, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeVerdict, IsMap: true},
			{Name: "in-" + br, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeVerdict, IsMap: true},
		} {
			if err := b.addSet(s, nil); err != nil {
				return err
			}
		}
		b.chain("from-" + br)
		b.chain("to-" + br)
		b.rule("from-"+br, &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(want.prefix)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(br)}, verdict(expr.VerdictDrop))
		b.rule("from-"+br, loadAddr(offSrc), b.vmap("out-"+br))
		b.rule("from-"+br, verdict(expr.VerdictDrop))
		b.rule("to-"+br, &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(want.prefix)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname(br)}, verdict(expr.VerdictDrop))
		b.rule("to-"+br, loadAddr(offDst), b.vmap("in-"+br))
		b.rule("to-"+br, verdict(expr.VerdictDrop))
		if err := b.c.SetAddElements(b.set(mapFrom), []nftables.SetElement{gotoEl(ifname(br), "from-"+br)}); err != nil {
			return err
		}
		if err := b.c.SetAddElements(b.set(mapTo), []nftables.SetElement{gotoEl(ifname(br), "to-"+br)}); err != nil {
			return err
		}
	}
	// 3. Tasks gone, or whose address, bridge or public address changed.
	var add []taskSnap
	for id, old := range cur.tasks {
		nw, ok := want.tasks[id]
		if ok && nw.IP == old.IP && nw.Bridge == old.Bridge && nw.PublicIP == old.PublicIP {
			continue
		}
		if err := b.delTask(old); err != nil {
			return err
		}
	}
	// 4. New tasks, and tasks whose rules changed.
	for id, nw := range want.tasks {
		old, ok := cur.tasks[id]
		switch {
		case !ok || nw.IP != old.IP || nw.Bridge != old.Bridge || nw.PublicIP != old.PublicIP:
			add = append(add, nw)
		case nw.rules != old.rules:
			for _, dir := range []string{"out-", "in-"} {
				b.c.FlushChain(&nftables.Chain{Name: dir + id, Table: b.t})
			}
			b.taskRules(nw, want)
		}
	}
	slices.SortFunc(add, func(x, y taskSnap) int { return strings.Compare(x.ID, y.ID) })
	for _, tk := range add {
		if err := b.addTask(tk, want); err != nil {
			return err
		}
	}
	// 5. Members of source groups that stay.
	for id, m := range want.sets {
		old := cur.sets[id]
		if old == nil {
			continue
		}
		if gone := elements(old, m); len(gone) > 0 {
			if err := b.c.SetDeleteElements(b.set(id), gone); err != nil {
				return err
			}
		}
		if added := elements(m, old); len(added) > 0 {
			if err := b.c.SetAddElements(b.set(id), added); err != nil {
				return err
			}
		}
	}
	// 6. Sets no rule names any more (their rules went in 3 and 4).
	for id := range cur.sets {
		if want.sets[id] == nil {
			b.c.DelSet(b.set(id))
		}
	}
	// 7. Bridges without tasks.
	for br := range cur.bridges {
		if want.bridges[br] {
			continue
		}
		if err := b.c.SetDeleteElements(b.set(mapFrom), []nftables.SetElement{{Key: ifname(br)}}); err != nil {
			return err
		}
		if err := b.c.SetDeleteElements(b.set(mapTo), []nftables.SetElement{{Key: ifname(br)}}); err != nil {
			return err
		}
		b.dropChain("from-" + br)
		b.dropChain("to-" + br)
		b.c.DelSet(b.set("out-" + br))
		b.c.DelSet(b.set("in-" + br))
	}
	return nil
}

// elements lists the addresses of m not in minus.
func elements(m, minus map[netip.Addr]bool) []nftables.SetElement {
	var out []nftables.SetElement
	for a := range m {
		if !minus[a] {
			out = append(out, nftables.SetElement{Key: a.AsSlice()})
		}
	}
	return out
}

func (b *batch) addTask(tk taskSnap, want *snapshot) error {
	b.chain("out-" + tk.ID)
	b.chain("in-" + tk.ID)
	b.taskRules(tk, want)
	key := tk.IP.AsSlice()
	if err := b.c.SetAddElements(b.set("out-"+tk.Bridge), []nftables.SetElement{gotoEl(key, "out-"+tk.ID)}); err != nil {
		return err
	}
	if err := b.c.SetAddElements(b.set("in-"+tk.Bridge), []nftables.SetElement{gotoEl(key, "in-"+tk.ID)}); err != nil {
		return err
	}
	if tk.PublicIP.IsValid() {
		pub := tk.PublicIP.AsSlice()
		if err := b.c.SetAddElements(b.set(mapPublic), []nftables.SetElement{{Key: pub, Val: key}}); err != nil {
			return err
		}
		if err := b.c.SetAddElements(b.set(mapPubIn), []nftables.SetElement{gotoEl(pub, "in-"+tk.ID)}); err != nil {
			return err
		}
	}
	return nil
}

func (b *batch) delTask(tk taskSnap) error {
	key := tk.IP.AsSlice()
	if err := b.c.SetDeleteElements(b.set("out-"+tk.Bridge), []nftables.SetElement{{Key: key}}); err != nil {
		return err
	}
	if err := b.c.SetDeleteElements(b.set("in-"+tk.Bridge), []nftables.SetElement{{Key: key}}); err != nil {
		return err
	}
	if tk.PublicIP.IsValid() {
		pub := tk.PublicIP.AsSlice()
		if err := b.c.SetDeleteElements(b.set(mapPublic), []nftables.SetElement{{Key: pub}}); err != nil {
			return err
		}
		if err := b.c.SetDeleteElements(b.set(mapPubIn), []nftables.SetElement{{Key: pub}}); err != nil {
			return err
		}
	}
	b.dropChain("out-" + tk.ID)
	b.dropChain("in-" + tk.ID)
	return nil
}

// taskRules fills a task's (empty) egress and ingress chains.
func (b *batch) taskRules(tk taskSnap, want *snapshot) {
	for _, gid := range tk.Groups {
		g, ok := want.groups[gid]
		if !ok {
			continue
		}
		for _, r := range g.Egress {
			for _, m := range matches(r, offDst, b.set) {
				b.rule("out-"+tk.ID, append(m, &expr.Verdict{Kind: expr.VerdictGoto, Chain: chainTo})...)
			}
		}
		for _, r := range g.Ingress {
			for _, m := range matches(r, offSrc, b.set) {
				b.rule("in-"+tk.ID, append(m, verdict(expr.VerdictAccept))...)
			}
		}
	}
	b.rule("out-"+tk.ID, verdict(expr.VerdictDrop))
	b.rule("in-"+tk.ID, verdict(expr.VerdictDrop))
}

// Offsets of the IPv4 source and destination address.
const (
	offSrc = 12
	offDst = 16
)

// matches turns one rule into the expressions of one nftables rule per
// peer (CIDR or source group), without the verdict. A rule Gantry cannot
// express (an unknown protocol) matches nothing, which is the safe side.
func matches(r agent.FirewallRule, peerOff uint32, set func(string) *nftables.Set) [][]expr.Any {
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
		s := set(id)
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
	c, err := f.conn()
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
