package netw

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/pkg/netns"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/gantry-dev/gantry/internal/agent"
)

// newManager returns a manager on a fresh data directory and a made-up VPC
// on a subnet nothing else on the host uses; each test takes its own third
// octet. The VPC's bridge is removed when the test ends.
func newManager(t *testing.T, third int) (*Manager, agent.NetworkSpec) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	m, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	vpc := fmt.Sprintf("vpc-c1test%d", third)
	t.Cleanup(func() { exec.Command("ip", "link", "del", m.BridgeName(vpc)).Run() })
	return m, agent.NetworkSpec{
		VPCID:      vpc,
		SubnetID:   fmt.Sprintf("subnet-c1test%d", third),
		SubnetCIDR: fmt.Sprintf("10.199.%d.0/24", third),
		Gateway:    fmt.Sprintf("10.199.%d.1", third),
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// listen opens a TCP listener inside the namespace; it answers with its
// name and the peer's address.
func listen(t *testing.T, nsPath, name string) {
	t.Helper()
	var ln net.Listener
	err := ns.WithNetNSPath(nsPath, func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp4", ":8080")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s %s", name, c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
}

// dial connects from inside fromNS ("" is the host) and returns the answer.
func dial(fromNS, addr string) (string, error) { return dialTimeout(fromNS, addr, 3*time.Second) }

func dialTimeout(fromNS, addr string, timeout time.Duration) (string, error) {
	var c net.Conn
	do := func(ns.NetNS) error {
		var err error
		c, err = net.DialTimeout("tcp4", addr, timeout)
		return err
	}
	var err error
	if fromNS == "" {
		err = do(nil)
	} else {
		err = ns.WithNetNSPath(fromNS, do)
	}
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

func TestTwoTasksReachEachOther(t *testing.T) {
	m, spec := newManager(t, 11)
	specA := spec
	specA.MACAddress = "0a:11:22:33:44:55"
	a, err := m.Setup(ctx(t), "taskaaaa", specA)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Setup(ctx(t), "taskbbbb", spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a=%+v b=%+v", a, b)
	prefix := netip.MustParsePrefix(spec.SubnetCIDR)
	for _, att := range []*Attachment{a, b} {
		ip, err := netip.ParseAddr(att.IPv4)
		if err != nil || !prefix.Contains(ip) || ip.As4()[3] < 4 {
			t.Errorf("address %s not a usable one of %s", att.IPv4, prefix)
		}
		if att.Gateway != spec.Gateway || att.PrefixLength != 24 {
			t.Errorf("attachment %+v", att)
		}
	}
	if a.IPv4 == b.IPv4 {
		t.Fatalf("both tasks got %s", a.IPv4)
	}
	if a.NetNSPath == b.NetNSPath {
		t.Fatalf("both tasks share namespace %s", a.NetNSPath)
	}
	if a.MAC != specA.MACAddress || b.MAC != MACFor("taskbbbb") {
		t.Errorf("MACs %s %s", a.MAC, b.MAC)
	}
	// The MAC is the interface's, not just reported.
	out, err := exec.Command("nsenter", "--net="+a.NetNSPath, "ip", "-o", "link", "show", "eth0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), specA.MACAddress) {
		t.Errorf("eth0 in a: %s %v", out, err)
	}
	out, err = exec.Command("nsenter", "--net="+a.NetNSPath, "ip", "-o", "link", "show", "lo").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "UP") {
		t.Errorf("lo in a is not up: %s %v", out, err)
	}

	listen(t, a.NetNSPath, "a")
	listen(t, b.NetNSPath, "b")
	for _, c := range []struct{ from, to, want string }{
		{"", a.IPv4, "a " + spec.Gateway},         // host to task, from the bridge's address
		{b.NetNSPath, a.IPv4, "a " + b.IPv4},      // task to task on the bridge, no NAT
		{a.NetNSPath, b.IPv4, "b " + a.IPv4},      //
		{a.NetNSPath, "127.0.0.1", "a 127.0.0.1"}, // the task's own loopback
	} {
		got, err := dial(c.from, net.JoinHostPort(c.to, "8080"))
		if err != nil || got != c.want {
			t.Errorf("from %q to %s: %q, %v; want %q", c.from, c.to, got, err, c.want)
		}
	}
	// The task's default route is its gateway on the host.
	if got, err := dial(a.NetNSPath, net.JoinHostPort(spec.Gateway, "1")); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("dial gateway from a: %q %v; want connection refused by the host", got, err)
	}

	for _, id := range []string{"taskaaaa", "taskbbbb"} {
		if err := m.Teardown(ctx(t), id, spec); err != nil {
			t.Fatal(err)
		}
		// Idempotent.
		if err := m.Teardown(ctx(t), id, spec); err != nil {
			t.Fatalf("second teardown: %v", err)
		}
	}
	assertClean(t, m, a, b)
	// The addresses are free again: new tasks get them.
	c, err := m.Setup(ctx(t), "taskcccc", spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Teardown(ctx(t), "taskcccc", spec); err != nil {
		t.Fatal(err)
	}
	assertClean(t, m, c)
}

func assertClean(t *testing.T, m *Manager, atts ...*Attachment) {
	t.Helper()
	left, err := m.Leftovers()
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("leftovers after teardown: %q", left)
	}
	for _, att := range atts {
		if _, err := os.Stat(att.NetNSPath); !os.IsNotExist(err) {
			t.Errorf("namespace %s still there: %v", att.NetNSPath, err)
		}
		if _, err := dialTimeout("", net.JoinHostPort(att.IPv4, "8080"), time.Second); err == nil {
			t.Errorf("%s still answers", att.IPv4)
		}
	}
	// ipMasq's per-task rules go with the task.
	for _, att := range atts {
		if hasNAT(t, att.IPv4) {
			t.Errorf("NAT rules for %s remain", att.IPv4)
		}
	}
	if ents, err := os.ReadDir(m.nsDir); err == nil {
		t.Errorf("namespace directory %s remains with %d entries", m.nsDir, len(ents))
	}
}

func hasNAT(t *testing.T, ip string) bool {
	t.Helper()
	out, err := exec.Command("iptables-save", "-t", "nat").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables-save: %v\n%s", err, out)
	}
	return strings.Contains(string(out), " "+ip+"/32 ")
}

func TestTeardownAfterRestart(t *testing.T) {
	old, spec := newManager(t, 12)
	att, err := old.Setup(ctx(t), "taskrestart", spec)
	if err != nil {
		t.Fatal(err)
	}
	if left, _ := old.Leftovers(); len(left) != 3 {
		t.Errorf("a live task should show a namespace, a lease and a record: %q", left)
	}
	if _, err := old.Setup(ctx(t), "taskrestart", spec); err == nil {
		t.Error("a second Setup of the same task succeeded")
	}
	if !hasNAT(t, att.IPv4) {
		t.Errorf("no masquerade rule for %s", att.IPv4)
	}
	listen(t, att.NetNSPath, "t")
	if _, err := dial("", net.JoinHostPort(att.IPv4, "8080")); err != nil {
		t.Fatal(err)
	}

	// As after a reboot: the namespace is gone, the lease and record stay.
	rebooted, err := old.Setup(ctx(t), "taskreboot", spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := netns.LoadNetNS(rebooted.NetNSPath).Remove(); err != nil {
		t.Fatal(err)
	}

	// A new process: nothing in memory, only the data directory.
	m, err := New(old.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := m.Get("taskrestart"); err != nil || got == nil || *got != *att {
		t.Errorf("Get after restart: %+v, %v; want %+v", got, err, att)
	}
	for _, id := range []string{"taskrestart", "taskreboot"} {
		if err := m.Teardown(ctx(t), id, agent.NetworkSpec{}); err != nil {
			t.Fatal(err)
		}
	}
	assertClean(t, m, att, rebooted)
	if got, err := m.Get("taskrestart"); err != nil || got != nil {
		t.Errorf("Get after teardown: %+v, %v", got, err)
	}
}

func TestSetupRejectsBadSpecs(t *testing.T) {
	m, spec := newManager(t, 13)
	bad := []agent.NetworkSpec{
		{VPCID: spec.VPCID, SubnetCIDR: "not-a-cidr"},
		{VPCID: spec.VPCID, SubnetCIDR: "10.199.13.0/30"},
		{VPCID: spec.VPCID, SubnetCIDR: spec.SubnetCIDR, Gateway: "10.1.1.1"},
		{VPCID: spec.VPCID, SubnetCIDR: spec.SubnetCIDR, MACAddress: "zz"},
	}
	for _, s := range bad {
		if _, err := m.Setup(ctx(t), "taskbad", s); err == nil {
			t.Errorf("Setup(%+v) succeeded", s)
		}
	}
	if _, err := m.Setup(ctx(t), "../escape", spec); err == nil {
		t.Error("a task id with a path in it was accepted")
	}
	if left, err := m.Leftovers(); err != nil || len(left) > 0 {
		t.Errorf("failed setups left %q %v", left, err)
	}
}

// Transfer hands a set-up network to another owner as it is: the new owner
// has the same namespace, address and MAC, the old one none, and the new
// owner's teardown releases everything.
func TestTransfer(t *testing.T) {
	m, spec := newManager(t, 20)
	c := ctx(t)
	att, err := m.Setup(c, "sbp-transfer", spec)
	if err != nil {
		t.Fatal(err)
	}
	listen(t, att.NetNSPath, "pooled")
	if _, err := m.Transfer("sbp-transfer", "task-x"); err != nil {
		t.Fatal(err)
	}
	if got, err := m.Get("sbp-transfer"); err != nil || got != nil {
		t.Errorf("the first owner still has %+v (%v)", got, err)
	}
	got, err := m.Get("task-x")
	if err != nil || got == nil || *got != *att {
		t.Fatalf("the new owner has %+v (%v), want %+v", got, err, att)
	}
	if out, err := dial("", net.JoinHostPort(att.IPv4, "8080")); err != nil || !strings.HasPrefix(out, "pooled") {
		t.Errorf("the namespace does not answer after the transfer: %q %v", out, err)
	}
	if _, err := m.Transfer("task-x", "task-x"); err == nil {
		t.Error("a transfer to an owner that has a network succeeded")
	}
	if _, err := m.Transfer("nobody", "task-y"); err == nil {
		t.Error("a transfer of no network succeeded")
	}
	if err := m.Teardown(c, "task-x", spec); err != nil {
		t.Fatal(err)
	}
	assertClean(t, m, att)
}
