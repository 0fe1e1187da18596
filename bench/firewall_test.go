package bench

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/firewall"
)

// fwNetNS makes a network namespace of its own for the firewall benchmarks,
// so their tables never meet a running server's traffic.
func fwNetNS(b *testing.B) int {
	b.Helper()
	name := fmt.Sprintf("gantry-bench-fw-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		b.Fatalf("ip netns add: %v: %s", err, out)
	}
	f, err := os.Open("/run/netns/" + name)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		f.Close()
		exec.Command("ip", "netns", "del", name).Run()
	})
	return int(f.Fd())
}

// fwState is n tasks spread over groups groups and bridges bridges, each
// group letting its members in on every port, anyone in the VPC on one
// TCP port, and everything out: the shape of a busy host.
func fwState(n, groups, bridges int) firewall.Config {
	cfg := firewall.Config{Groups: map[string]agent.FirewallGroup{}, Members: map[string][]netip.Addr{}, BridgePrefix: "gtr-"}
	port := int32(8080)
	for g := range groups {
		id := fmt.Sprintf("sg-%08x", g)
		cfg.Groups[id] = agent.FirewallGroup{ID: id,
			Ingress: []agent.FirewallRule{{Protocol: "-1", Groups: []string{id}}, {Protocol: "tcp", FromPort: &port, ToPort: &port, CIDRs: []string{"10.0.0.0/8"}}},
			Egress:  []agent.FirewallRule{{Protocol: "-1", CIDRs: []string{"0.0.0.0/0"}}}}
	}
	for i := range n {
		cfg.Tasks = append(cfg.Tasks, fwTask(i, groups, bridges))
	}
	fwMembers(&cfg)
	return cfg
}

func fwTask(i, groups, bridges int) firewall.Task {
	return firewall.Task{ID: fmt.Sprintf("%032x", i), IP: netip.AddrFrom4([4]byte{10, byte(i % bridges), byte(i / 250), byte(2 + i%250)}),
		Bridge: fmt.Sprintf("gtr-bench%d", i%bridges), Groups: []string{fmt.Sprintf("sg-%08x", i%groups)}}
}

func fwMembers(cfg *firewall.Config) {
	clear(cfg.Members)
	for _, tk := range cfg.Tasks {
		for _, g := range tk.Groups {
			cfg.Members[g] = append(cfg.Members[g], tk.IP)
		}
	}
}

func reportMs(b *testing.B, name string, d []time.Duration) float64 {
	slices.Sort(d)
	p50 := float64(d[len(d)/2].Microseconds()) / 1000
	b.ReportMetric(p50, name+"-p50-ms")
	b.ReportMetric(float64(d[len(d)*99/100].Microseconds())/1000, name+"-p99-ms")
	return p50
}

// BenchmarkFirewallTaskUpdate is the kernel-side cost of a task start and
// stop with 1, 50 and 200 other tasks' rules present: the incremental
// update Gantry does, against rebuilding the table whole (what it did
// before, and still does at start-up), in the same run.
//
//	go test -run '^$' -bench FirewallTaskUpdate -benchtime 100x ./bench
func BenchmarkFirewallTaskUpdate(b *testing.B) {
	ns := fwNetNS(b)
	for _, n := range []int{1, 50, 200} {
		b.Run(fmt.Sprintf("tasks=%d", n), func(b *testing.B) {
			f := firewall.New("gantry-bench-fw")
			f.NetNS = ns
			defer f.Remove()
			const groups, bridges = 50, 4
			base := fwState(n, groups, bridges)
			with := base
			with.Tasks = append(slices.Clone(base.Tasks), fwTask(n, groups, bridges))
			with.Members = map[string][]netip.Addr{}
			fwMembers(&with)
			if err := f.Apply(base); err != nil {
				b.Fatal(err)
			}
			var start, stop, rebuild []time.Duration
			for b.Loop() {
				t0 := time.Now()
				if err := f.Apply(with); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if err := f.Apply(base); err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				// The floor: the same start as a whole-table rebuild.
				if err := f.Rebuild(with); err != nil {
					b.Fatal(err)
				}
				t3 := time.Now()
				if err := f.Rebuild(base); err != nil {
					b.Fatal(err)
				}
				start, stop, rebuild = append(start, t1.Sub(t0)), append(stop, t2.Sub(t1)), append(rebuild, t3.Sub(t2))
			}
			s := reportMs(b, "start", start)
			reportMs(b, "stop", stop)
			r := reportMs(b, "rebuild", rebuild)
			b.ReportMetric(s/r, "start/rebuild")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkFirewallRuleUpdate is the kernel-side latency of one rule
// added to a group with 500 tasks in 50 groups on the host (10 tasks'
// chains to rewrite), next to rebuilding the table for the same change.
//
//	go test -run '^$' -bench FirewallRuleUpdate -benchtime 50x ./bench
func BenchmarkFirewallRuleUpdate(b *testing.B) {
	ns := fwNetNS(b)
	f := firewall.New("gantry-bench-fw")
	f.NetNS = ns
	defer f.Remove()
	base := fwState(500, 50, 4)
	changed := base
	changed.Groups = map[string]agent.FirewallGroup{}
	for id, g := range base.Groups {
		changed.Groups[id] = g
	}
	g := changed.Groups["sg-00000007"]
	p := int32(9000)
	g.Ingress = append(slices.Clone(g.Ingress), agent.FirewallRule{Protocol: "udp", FromPort: &p, ToPort: &p, CIDRs: []string{"192.168.0.0/16"}})
	changed.Groups[g.ID] = g
	if err := f.Apply(base); err != nil {
		b.Fatal(err)
	}
	var upd, rebuild []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if err := f.Apply(changed); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := f.Rebuild(base); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		if err := f.Rebuild(changed); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		if err := f.Apply(base); err != nil {
			b.Fatal(err)
		}
		upd, rebuild = append(upd, t1.Sub(t0)), append(rebuild, t3.Sub(t2))
		_ = t2
	}
	u := reportMs(b, "update", upd)
	r := reportMs(b, "rebuild", rebuild)
	b.ReportMetric(u/r, "update/rebuild")
	b.ReportMetric(0, "ns/op")
}
