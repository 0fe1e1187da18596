package firewall

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/gantry-dev/gantry/internal/agent"
)

func i32(v int32) *int32 { return &v }

// TestApply renders a state into the kernel and removes it again.
func TestApply(t *testing.T) {
	f := New("gantry-unit-test")
	cfg := Config{
		Tasks: []Task{{ID: "aaa", IP: netip.MustParseAddr("10.9.0.5"), Bridge: "gtr-x1", Groups: []string{"sg-1"}},
			{ID: "bbb", IP: netip.MustParseAddr("10.9.0.6"), Bridge: "gtr-x1", Groups: []string{"sg-2"}, PublicIP: netip.MustParseAddr("100.64.0.6")}},
		Groups: map[string]agent.FirewallGroup{
			"sg-1": {ID: "sg-1", Ingress: []agent.FirewallRule{{Protocol: "-1", Groups: []string{"sg-1"}}}, Egress: []agent.FirewallRule{{Protocol: "-1", CIDRs: []string{"0.0.0.0/0"}}}},
			"sg-2": {ID: "sg-2", Ingress: []agent.FirewallRule{{Protocol: "tcp", FromPort: i32(8080), ToPort: i32(8090), CIDRs: []string{"10.9.0.0/16"}}, {Protocol: "icmp", FromPort: i32(8), ToPort: i32(-1), CIDRs: []string{"1.2.3.4/32"}}}},
		},
		Members:      map[string][]netip.Addr{"sg-1": {netip.MustParseAddr("10.9.0.5")}},
		BridgePrefix: "gtr-",
	}
	if err := f.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Remove() })
	out := list(t, f.Table)
	for _, want := range []string{"ip saddr 10.9.0.0/16 tcp dport 8080-8090 accept", "ip saddr @sg-1 accept", "elements = { 10.9.0.5 }",
		`"gtr-x1" : goto from-gtr-x1`, `oifname "gtr-*" oifname != "gtr-x1" drop`, "10.9.0.6 : goto in-bbb",
		"100.64.0.6 : 10.9.0.6", "100.64.0.6 : goto in-bbb", "dnat to ip daddr map @public"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if r, e, err := f.Count(); err != nil || r != 22 || e != 9 {
		t.Errorf("count: %d rules, %d elements, %v; want 22, 9", r, e, err)
	}
	if err := f.Apply(Config{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.Count(); err != ErrNoTable {
		t.Fatal("table left", err)
	}
}

// list is the table as nft prints it, with set elements and then the
// table's chains and sets sorted: the kernel lists a hash set in no fixed
// order, and chains and sets in the order they were made.
func list(t testing.TB, table string) string {
	out, err := exec.Command("nft", "list", "table", "ip", table).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list: %v\n%s", err, out)
	}
	s := strings.ReplaceAll(string(out), table, "T")
	// Long element lists are wrapped over lines; join them first.
	s = regexp.MustCompile(`,\s*\n\s*`).ReplaceAllString(s, ", ")
	s = regexp.MustCompile(`elements = \{ ([^}]*) \}`).ReplaceAllStringFunc(s, func(m string) string {
		inner := strings.TrimSuffix(strings.TrimPrefix(m, "elements = { "), " }")
		els := strings.Split(inner, ", ")
		slices.Sort(els)
		return "elements = { " + strings.Join(els, ", ") + " }"
	})
	blocks := strings.Split(strings.TrimSpace(s), "\n\n")
	slices.Sort(blocks)
	return strings.Join(blocks, "\n\n")
}

// TestIncremental drives a firewall through random changes (tasks coming
// and going, group membership, rules edited, bridges appearing and
// emptying) and checks after each that the incrementally updated table is
// the one a whole rebuild of the same state gives, and that the update did
// not rebuild.
func TestIncremental(t *testing.T) {
	f, ref := New("gantry-unit-incr"), New("gantry-unit-ref")
	t.Cleanup(func() { f.Remove(); ref.Remove() })
	rng := rand.New(rand.NewPCG(1, 2))
	groups := []string{"sg-a", "sg-b", "sg-c", "sg-d"}
	randRule := func() agent.FirewallRule {
		r := agent.FirewallRule{Protocol: []string{"tcp", "udp", "-1", "icmp"}[rng.IntN(4)]}
		if r.Protocol == "tcp" || r.Protocol == "udp" {
			p := int32(1000 + rng.IntN(5))
			r.FromPort, r.ToPort = i32(p), i32(p+int32(rng.IntN(3)))
		}
		if rng.IntN(2) == 0 {
			r.Groups = []string{groups[rng.IntN(len(groups))]}
		} else {
			r.CIDRs = []string{fmt.Sprintf("10.%d.0.0/16", rng.IntN(4))}
		}
		return r
	}
	cfg := Config{Groups: map[string]agent.FirewallGroup{}, Members: map[string][]netip.Addr{}, BridgePrefix: "gtr-"}
	for _, g := range groups {
		cfg.Groups[g] = agent.FirewallGroup{ID: g, Ingress: []agent.FirewallRule{randRule()}, Egress: []agent.FirewallRule{randRule()}}
	}
	members := func() {
		cfg.Members = map[string][]netip.Addr{}
		for _, tk := range cfg.Tasks {
			for _, g := range tk.Groups {
				cfg.Members[g] = append(cfg.Members[g], tk.IP)
			}
		}
		// A member on another host.
		cfg.Members["sg-a"] = append(cfg.Members["sg-a"], netip.MustParseAddr("10.99.0.1"))
	}
	next := 0
	for step := range 60 {
		switch op := rng.IntN(10); {
		case op < 4 || len(cfg.Tasks) < 2: // a task starts
			next++
			tk := Task{ID: fmt.Sprintf("t%03d", next), IP: netip.AddrFrom4([4]byte{10, byte(rng.IntN(3)), 0, byte(next)}),
				Bridge: fmt.Sprintf("gtr-u%d", rng.IntN(3)), Groups: []string{groups[rng.IntN(len(groups))]}}
			if rng.IntN(3) == 0 {
				tk.Groups = append(tk.Groups, groups[rng.IntN(len(groups))])
			}
			if rng.IntN(3) == 0 {
				tk.PublicIP = netip.AddrFrom4([4]byte{100, 64, 0, byte(next)})
			}
			cfg.Tasks = append(cfg.Tasks, tk)
		case op < 7: // one stops
			i := rng.IntN(len(cfg.Tasks))
			cfg.Tasks = slices.Delete(cfg.Tasks, i, i+1)
		case op < 9: // a rule is added or revoked
			g := cfg.Groups[groups[rng.IntN(len(groups))]]
			if rng.IntN(2) == 0 || len(g.Ingress) == 0 {
				g.Ingress = append(slices.Clone(g.Ingress), randRule())
			} else {
				g.Ingress = slices.Clone(g.Ingress[1:])
			}
			cfg.Groups[g.ID] = g
		default: // a group is deleted, or comes back
			id := groups[rng.IntN(len(groups))]
			if _, ok := cfg.Groups[id]; ok {
				delete(cfg.Groups, id)
			} else {
				cfg.Groups[id] = agent.FirewallGroup{ID: id, Ingress: []agent.FirewallRule{randRule()}}
			}
		}
		members()
		rebuilds := f.Rebuilds
		if err := f.Apply(cfg); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if step > 0 && f.Rebuilds != rebuilds {
			t.Fatalf("step %d rebuilt the table instead of updating it", step)
		}
		if err := ref.Rebuild(cfg); err != nil {
			t.Fatalf("step %d: rebuild: %v", step, err)
		}
		if got, want := list(t, f.Table), list(t, ref.Table); got != want {
			t.Fatalf("step %d: incremental table differs from a rebuild:\n--- incremental\n%s\n--- rebuild\n%s", step, got, want)
		}
	}
	if f.Updates < 50 {
		t.Errorf("only %d incremental updates", f.Updates)
	}
}

// TestUpdateLeavesOthers checks that adding a task leaves the other tasks'
// rules as they were (same rule handles): the kernel never re-creates them.
func TestUpdateLeavesOthers(t *testing.T) {
	f := New("gantry-unit-others")
	t.Cleanup(func() { f.Remove() })
	g := agent.FirewallGroup{ID: "sg-1", Ingress: []agent.FirewallRule{{Protocol: "tcp", FromPort: i32(80), ToPort: i32(80), CIDRs: []string{"0.0.0.0/0"}}}}
	cfg := Config{Groups: map[string]agent.FirewallGroup{"sg-1": g}, BridgePrefix: "gtr-"}
	for i := range 3 {
		cfg.Tasks = append(cfg.Tasks, Task{ID: fmt.Sprint("k", i), IP: netip.AddrFrom4([4]byte{10, 8, 0, byte(10 + i)}), Bridge: "gtr-k", Groups: []string{"sg-1"}})
	}
	if err := f.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	before := handles(t, f.Table)
	cfg.Tasks = append(cfg.Tasks, Task{ID: "k3", IP: netip.MustParseAddr("10.8.0.13"), Bridge: "gtr-k", Groups: []string{"sg-1"}})
	if err := f.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	after := handles(t, f.Table)
	for ch, hs := range before {
		if !slices.Equal(hs, after[ch]) {
			t.Errorf("chain %s: rule handles %v became %v", ch, hs, after[ch])
		}
	}
	if len(after["in-k3"]) != 2 {
		t.Errorf("new task's ingress chain has %d rules, want 2", len(after["in-k3"]))
	}
	// Someone deletes the table behind our back: the next change rebuilds.
	if out, err := exec.Command("nft", "delete", "table", "ip", f.Table).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	cfg.Tasks = cfg.Tasks[1:]
	if err := f.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	if f.Rebuilds != 2 {
		t.Errorf("%d rebuilds after the table vanished, want 2", f.Rebuilds)
	}
	if _, ok := handles(t, f.Table)["in-k0"]; ok {
		t.Error("stopped task's chain came back")
	}
	// A chain flushed by hand: an update trusts the kernel and leaves it,
	// a due reconcile repairs it.
	if out, err := exec.Command("nft", "flush", "chain", "ip", f.Table, "in-k1").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := f.Reconcile(cfg); err != nil {
		t.Fatal(err)
	}
	if n := len(handles(t, f.Table)["in-k1"]); n != 0 {
		t.Errorf("reconcile before it was due rebuilt the table (%d rules)", n)
	}
	f.lastRebuild = time.Time{}
	if err := f.Reconcile(cfg); err != nil {
		t.Fatal(err)
	}
	if n := len(handles(t, f.Table)["in-k1"]); n != 2 {
		t.Errorf("after a due reconcile, in-k1 has %d rules, want 2", n)
	}
}

func handles(t *testing.T, table string) map[string][]uint64 {
	c, err := New(table).conn()
	if err != nil {
		t.Fatal(err)
	}
	tb := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: table}
	chains, err := c.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]uint64{}
	for _, ch := range chains {
		if ch.Table.Name != table {
			continue
		}
		rs, err := c.GetRules(tb, ch)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			out[ch.Name] = append(out[ch.Name], r.Handle)
		}
	}
	return out
}
