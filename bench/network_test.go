package bench

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	ctrd "github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/pkg/netns"
	"github.com/containerd/containerd/snapshots"
	"github.com/containernetworking/cni/libcni"

	"github.com/gantry-dev/gantry/internal/agent"
	gcontainerd "github.com/gantry-dev/gantry/internal/containerd"
	"github.com/gantry-dev/gantry/internal/firewall"
	"github.com/gantry-dev/gantry/internal/netw"
)

// hostState is what a server's tasks can leave on the host, counted.
type hostState struct {
	leases, veths, chains, elements, masq int
	namespaces, netRecords                []string
	cgroups, containers, loops, mounts    []string
	snapshots                             int
	table                                 bool
}

func (h hostState) String() string {
	return fmt.Sprintf("leases=%d veths=%d nft-table=%v chains=%d elements=%d masquerade-rules=%d netns/records=%v cgroups=%v containers=%v snapshots=%d loops=%v mounts=%v",
		h.leases, h.veths, h.table, h.chains, h.elements, h.masq, slices.Concat(h.namespaces, h.netRecords), h.cgroups, h.containers, h.snapshots, h.loops, h.mounts)
}

// snapshotHost counts, for the server with dataDir and the task ids it ran:
// host-local's leases, veths on the server's bridges, the firewall table's
// chains and elements, CNI's masquerade rules for its subnets, namespaces
// and network records outside the netns pool, the tasks' cgroups, the
// containers, snapshots, loop devices and mounts under the data dir.
func snapshotHost(b *testing.B, dataDir, table, bridge string, taskIDs []string) hostState {
	var h hostState
	abs, _ := filepath.Abs(dataDir)
	ipam := filepath.Join(abs, "agent", "ipam")
	filepath.WalkDir(ipam, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasPrefix(d.Name(), "last_reserved_ip") && d.Name() != "lock" {
			h.leases++
		}
		return nil
	})
	nw, err := netw.New(abs)
	if err != nil {
		b.Fatal(err)
	}
	if left, err := nw.Leftovers(); err == nil {
		h.namespaces = left
	}
	pooled, _ := nw.Pooled()
	// Pooled namespaces are kept on purpose, each with its veth and lease.
	h.leases -= len(pooled)
	out, _ := exec.Command("ip", "-o", "link", "show", "type", "veth").Output()
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, " master "+bridge+" ") {
			h.veths++
		}
	}
	h.veths -= len(pooled)
	if t, err := exec.Command("nft", "list", "table", "ip", table).Output(); err == nil {
		h.table = true
		h.chains = strings.Count(string(t), "\tchain ")
		h.elements = strings.Count(string(t), " : goto ")
	}
	nat, _ := exec.Command("iptables-save", "-t", "nat").Output()
	for _, id := range taskIDs {
		if strings.Contains(string(nat), id) {
			h.masq++
		}
		if ds, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*/gantry", id)); len(ds) > 0 {
			h.cgroups = append(h.cgroups, ds...)
		}
	}
	client, err := ctrd.New(gcontainerd.OwnSocket(abs))
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	ctx := namespaces.WithNamespace(context.Background(), gcontainerd.Namespace)
	cs, err := client.Containers(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range cs {
		h.containers = append(h.containers, c.ID())
	}
	client.SnapshotService("overlayfs").Walk(ctx, func(context.Context, snapshots.Info) error {
		h.snapshots++
		return nil
	})
	loops, _ := exec.Command("losetup", "-a").Output()
	for _, l := range strings.Split(string(loops), "\n") {
		if strings.Contains(l, abs) {
			h.loops = append(h.loops, l)
		}
	}
	runDir := filepath.Dir(gcontainerd.OwnSocket(abs))
	f, _ := os.Open("/proc/self/mountinfo")
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// Under the data dir (task disks) and containerd's state dir
		// (containers' root file systems).
		fs := strings.Fields(sc.Text())
		if len(fs) > 4 && (strings.HasPrefix(fs[4], abs+"/") || strings.HasPrefix(fs[4], runDir+"/")) {
			h.mounts = append(h.mounts, fs[4])
		}
	}
	return h
}

// BenchmarkRunStopLeaks runs GANTRY_LEAK_CYCLES (default 1,000) task
// starts and stops, ten tasks at a time, then checks the host holds
// nothing more of them than before: address leases, veths, nftables
// chains and set elements, masquerade rules, namespaces, cgroups,
// containers, snapshots, loop devices, mounts. A soak, not a speed figure:
//
//	go test -run '^$' -bench RunStopLeaks -benchtime 1x -timeout 2h ./bench
func BenchmarkRunStopLeaks(b *testing.B) {
	cycles := 1000
	if v, err := strconv.Atoi(os.Getenv("GANTRY_LEAK_CYCLES")); err == nil && v > 0 {
		cycles = v
	}
	e := setup(b)
	table := fwTableName(e.s.DataDir)
	var vpc struct{ Vpcs []struct{ VpcId string } }
	e.s.MustAWS(&vpc, "ec2", "describe-vpcs", "--filters", "Name=is-default,Values=true")
	nw, err := netw.New(e.s.DataDir)
	if err != nil || len(vpc.Vpcs) != 1 {
		b.Fatalf("default VPC %+v: %v", vpc, err)
	}
	bridge := nw.BridgeName(vpc.Vpcs[0].VpcId)
	ctx := context.Background()
	// One task first, so images are unpacked and the pool is filled before
	// the baseline is taken.
	arns, err := e.run(ctx, 1)
	if err != nil {
		b.Fatal(err)
	}
	if err := e.waitStatus(ctx, arns, "RUNNING", 200*time.Millisecond); err != nil {
		b.Fatal(err)
	}
	e.stopAll(b, arns)
	time.Sleep(3 * time.Second)
	before := snapshotHost(b, e.s.DataDir, table, bridge, nil)
	var ids []string
	start := time.Now()
	for b.Loop() {
		for done := 0; done < cycles; done += 10 {
			arns, err := e.run(ctx, 10)
			if err != nil {
				b.Fatal(err)
			}
			if err := e.waitStatus(ctx, arns, "RUNNING", 200*time.Millisecond); err != nil {
				b.Fatal(err)
			}
			e.stopAll(b, arns)
			for _, a := range arns {
				ids = append(ids, a[strings.LastIndex(a, "/")+1:])
			}
			if done%200 == 0 {
				fmt.Printf("%d cycles, %s\n", done+10, time.Since(start).Round(time.Second))
			}
		}
	}
	took := time.Since(start)
	// Let the last stops finish their teardown.
	var after hostState
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Second) {
		after = snapshotHost(b, e.s.DataDir, table, bridge, ids)
		if after.String() == before.String() || time.Now().After(deadline) {
			break
		}
	}
	// Printed, not logged: the benchmark log is cut after ten lines.
	fmt.Printf("%d run/stop cycles in %s\nbefore: %s\nafter:  %s\n", len(ids), took.Round(time.Second), before, after)
	if after.String() != before.String() {
		b.Errorf("the host holds more than before the cycles:\nbefore: %s\nafter:  %s", before, after)
	}
	b.ReportMetric(took.Seconds(), "s-total")
	b.ReportMetric(float64(len(ids))/took.Seconds(), "cycles/s")
	b.ReportMetric(0, "ns/op")
}

// fwTableName is the server's nftables table (as internal/agent/local
// names it).
func fwTableName(dataDir string) string {
	abs, _ := filepath.Abs(dataDir)
	h := sha256.Sum256([]byte(abs))
	return "gantry-" + hex.EncodeToString(h[:5])
}

// benchSubnet is a /24 in 10.2-99.x that no route on this host uses.
func benchSubnet(b *testing.B) (cidr, gw string) {
	out, _ := exec.Command("ip", "-4", "-o", "route").Output()
	for i := range 98 {
		x := 2 + (os.Getpid()+i)%98
		if !strings.Contains(string(out), fmt.Sprintf("10.%d.", x)) {
			return fmt.Sprintf("10.%d.7.0/24", x), fmt.Sprintf("10.%d.7.1", x)
		}
	}
	b.Fatal("no free 10.x range")
	return "", ""
}

// BenchmarkTaskNetwork is a task's network set up and torn down as Gantry
// does it on a cold start (namespace, CNI bridge and host-local, the MAC
// and loopback, the firewall's incremental update with 50 other tasks'
// rules present, then all of it undone), next to the floor: the CNI
// bridge plugin alone on the same bridge, in a fresh namespace, ADD then
// DEL, in the same run.
//
//	go test -run '^$' -bench TaskNetwork -benchtime 50x ./bench
func BenchmarkTaskNetwork(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	dir := b.TempDir()
	m, err := netw.New(dir)
	if err != nil {
		b.Fatal(err)
	}
	cidr, gw := benchSubnet(b)
	spec := agent.NetworkSpec{VPCID: fmt.Sprintf("vpc-bench%d", os.Getpid()), SubnetID: "subnet-bench", SubnetCIDR: cidr, Gateway: gw}
	bridge := m.BridgeName(spec.VPCID)
	b.Cleanup(func() { exec.Command("ip", "link", "del", bridge).Run() })
	fw := firewall.New(fmt.Sprintf("gantry-bench-net%d", os.Getpid()))
	defer fw.Remove()
	base := fwState(50, 50, 4)
	if err := fw.Apply(base); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var gantry, floor []time.Duration
	b.Run("gantry", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			id := fmt.Sprintf("%032x", 0xbe00+i)
			t0 := time.Now()
			att, err := m.Setup(ctx, id, spec)
			if err != nil {
				b.Fatal(err)
			}
			with := base
			with.Tasks = append(slices.Clone(base.Tasks), firewall.Task{ID: id, IP: netip.MustParseAddr(att.IPv4), Bridge: bridge, Groups: []string{"sg-00000001"}})
			if err := fw.Apply(with); err != nil {
				b.Fatal(err)
			}
			if err := fw.Apply(base); err != nil {
				b.Fatal(err)
			}
			if err := m.Teardown(ctx, id, spec); err != nil {
				b.Fatal(err)
			}
			gantry = append(gantry, time.Since(t0))
		}
		reportMs(b, "setup+teardown", gantry)
		b.ReportMetric(0, "ns/op")
	})
	b.Run("cni-bridge-floor", func(b *testing.B) {
		nsDir := filepath.Join(dir, "floor-ns")
		os.MkdirAll(nsDir, 0o755)
		cni := libcni.NewCNIConfigWithCacheDir(netw.PluginDirs, filepath.Join(dir, "floor-cache"), nil)
		conf, err := libcni.ConfListFromBytes(fmt.Appendf(nil, `{"cniVersion":"1.0.0","name":"gantry-bench-floor","plugins":[{"type":"bridge","bridge":%q,"isGateway":true,"ipMasq":true,"hairpinMode":true,
			"ipam":{"type":"host-local","dataDir":%q,"ranges":[[{"subnet":%q,"gateway":%q}]],"routes":[{"dst":"0.0.0.0/0"}]}}]}`,
			bridge, filepath.Join(dir, "floor-ipam"), cidr, gw))
		if err != nil {
			b.Fatal(err)
		}
		i := 0
		for b.Loop() {
			i++
			t0 := time.Now()
			ns, err := netns.NewNetNS(nsDir)
			if err != nil {
				b.Fatal(err)
			}
			rt := &libcni.RuntimeConf{ContainerID: fmt.Sprintf("floor%d", i), NetNS: ns.GetPath(), IfName: "eth0"}
			if _, err := cni.AddNetworkList(ctx, conf, rt); err != nil {
				b.Fatal(err)
			}
			if err := cni.DelNetworkList(ctx, conf, rt); err != nil {
				b.Fatal(err)
			}
			if err := ns.Remove(); err != nil {
				b.Fatal(err)
			}
			floor = append(floor, time.Since(t0))
		}
		f := reportMs(b, "setup+teardown", floor)
		if len(gantry) > 0 {
			slices.Sort(gantry)
			b.ReportMetric(float64(gantry[len(gantry)/2].Microseconds())/1000/f, "gantry/floor")
		}
		b.ReportMetric(0, "ns/op")
	})
}

// BenchmarkTaskThroughput is TCP throughput from one task's namespace to
// another's on one VPC bridge, through the security-group rules (both
// tasks' chains in a table that also holds 200 other tasks' rules) and
// without Gantry's table, alternating, in the same run. The sender and
// sink are test/netecho.
//
//	go test -run '^$' -bench TaskThroughput -benchtime 5x ./bench
func BenchmarkTaskThroughput(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	dir := b.TempDir()
	bin := filepath.Join(dir, "netecho")
	build := exec.Command("go", "build", "-o", bin, "github.com/gantry-dev/gantry/test/netecho")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build netecho: %v\n%s", err, out)
	}
	m, err := netw.New(dir)
	if err != nil {
		b.Fatal(err)
	}
	cidr, gw := benchSubnet(b)
	spec := agent.NetworkSpec{VPCID: fmt.Sprintf("vpc-tput%d", os.Getpid()), SubnetID: "subnet-tput", SubnetCIDR: cidr, Gateway: gw}
	bridge := m.BridgeName(spec.VPCID)
	b.Cleanup(func() { exec.Command("ip", "link", "del", bridge).Run() })
	ctx := context.Background()
	var atts []*netw.Attachment
	for i := range 2 {
		id := fmt.Sprintf("%032x", 0x7a00+i)
		att, err := m.Setup(ctx, id, spec)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { m.Teardown(ctx, id, spec) })
		atts = append(atts, att)
	}
	sink := exec.Command("nsenter", "--net="+atts[1].NetNSPath, bin, "sink", "tcp:7000")
	if err := sink.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sink.Process.Kill(); sink.Wait() })
	time.Sleep(300 * time.Millisecond)

	fw := firewall.New(fmt.Sprintf("gantry-bench-tput%d", os.Getpid()))
	defer fw.Remove()
	cfg := fwState(200, 50, 4)
	for i, att := range atts {
		cfg.Tasks = append(cfg.Tasks, firewall.Task{ID: fmt.Sprintf("tput%d", i), IP: netip.MustParseAddr(att.IPv4), Bridge: bridge, Groups: []string{"sg-00000003"}})
	}
	fwMembers(&cfg)
	send := func() float64 {
		out, err := exec.Command("nsenter", "--net="+atts[0].NetNSPath, bin, "send", atts[1].IPv4+":7000", "3").Output()
		if err != nil {
			b.Fatalf("send: %v: %s", err, out)
		}
		v, _ := strconv.ParseFloat(strings.Fields(string(out))[0], 64)
		return v
	}
	var with, without []float64
	for b.Loop() {
		if err := fw.Apply(cfg); err != nil {
			b.Fatal(err)
		}
		with = append(with, send())
		if err := fw.Remove(); err != nil {
			b.Fatal(err)
		}
		without = append(without, send())
	}
	slices.Sort(with)
	slices.Sort(without)
	w, wo := with[len(with)/2]/1e6, without[len(without)/2]/1e6
	b.ReportMetric(w, "rules-MB/s")
	b.ReportMetric(wo, "no-rules-MB/s")
	b.ReportMetric(w/wo, "rules/no-rules")
	b.ReportMetric(0, "ns/op")
}
