package netw

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// waitPooled waits until the manager holds n ready entries on the host.
func waitPooled(t *testing.T, m *Manager, n int) []string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := m.Pooled()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool holds %d entries, want %d: %v", len(got), n, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPoolClaimRefillAndTeardown: a task claims a namespace made ahead of
// it, with its own MAC and a working address; the pool refills; the claimed
// namespace dies with the task and is never handed out again; an agent
// restart adopts the ready entries; idle entries go, and the bridge too.
func TestPoolClaimRefillAndTeardown(t *testing.T) {
	m, spec := newManager(t, 15)
	if err := m.StartPool(PoolConfig{Size: 2, Idle: time.Hour}); err != nil {
		t.Fatal(err)
	}
	// The first start of a subnet has no entries yet: CNI runs, and the
	// pool fills behind it.
	first, err := m.Setup(ctx(t), "task1", spec)
	if err != nil {
		t.Fatal(err)
	}
	ready := waitPooled(t, m, 2)

	spec.MACAddress = "0a:11:22:33:44:55"
	second, err := m.Setup(ctx(t), "task2", spec)
	if err != nil {
		t.Fatal(err)
	}
	if second.NetNSPath != ready[0] && second.NetNSPath != ready[1] {
		t.Fatalf("task2 got namespace %s, not one of the pool's %v", second.NetNSPath, ready)
	}
	if second.IPv4 == first.IPv4 {
		t.Fatalf("both tasks have %s", first.IPv4)
	}
	out, err := nsRun(second.NetNSPath, "ip", "-o", "link", "show", "eth0")
	if err != nil || !strings.Contains(out, spec.MACAddress) {
		t.Fatalf("claimed eth0 does not carry the task's MAC %s: %s %v", spec.MACAddress, out, err)
	}
	// The claimed namespace is wired: the two tasks talk.
	listen(t, second.NetNSPath, "task2")
	if got, err := dial(first.NetNSPath, second.IPv4+":8080"); err != nil || !strings.HasPrefix(got, "task2 "+first.IPv4) {
		t.Fatalf("task1 -> task2: %q %v", got, err)
	}
	waitPooled(t, m, 2)

	if err := m.Teardown(ctx(t), "task2", spec); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(second.NetNSPath); !os.IsNotExist(err) {
		t.Fatalf("the claimed namespace outlived its task: %v", err)
	}
	for _, p := range waitPooled(t, m, 2) {
		if p == second.NetNSPath {
			t.Fatal("a used namespace went back into the pool")
		}
	}
	if left, err := m.Leftovers(); err != nil || len(left) != 3 { // task1's netns, lease and record
		t.Fatalf("leftovers with task1 running and a full pool: %v %v", left, err)
	}

	// A new agent adopts the entries: its first start claims one.
	m.StopPool()
	m2, err := New(m.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := m2.StartPool(PoolConfig{Size: 2, Idle: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	before := waitPooled(t, m2, 2)
	third, err := m2.Setup(ctx(t), "task3", spec)
	if err != nil {
		t.Fatal(err)
	}
	if third.NetNSPath != before[0] && third.NetNSPath != before[1] {
		t.Fatalf("after a restart task3 got %s, not an adopted entry %v", third.NetNSPath, before)
	}
	for _, id := range []string{"task1", "task3"} {
		if err := m2.Teardown(ctx(t), id, spec); err != nil {
			t.Fatal(err)
		}
	}
	// Idle: the entries go, and the bridge with them.
	waitPooled(t, m2, 0)
	m2.StopPool()
	if left, err := m2.Leftovers(); err != nil || len(left) != 0 {
		t.Fatalf("left after the pool went idle: %v %v", left, err)
	}
	if _, err := nsRun("", "ip", "link", "show", m2.BridgeName(spec.VPCID)); err == nil {
		t.Fatal("the bridge outlived the last entry")
	}
}

// nsRun runs a command in the namespace ("" is the host's).
func nsRun(nsPath string, args ...string) (string, error) {
	if nsPath != "" {
		args = append([]string{"nsenter", "--net=" + nsPath}, args...)
	}
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	return string(out), err
}
