package netw

import (
	"net"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// TestGatewayKeepsMACWhenTasksGo: a task that resolved its gateway keeps
// reaching the host after another task on its bridge stops, even when that
// task's veth had the lowest MAC (which an unpinned bridge adopts, and
// drops again with the veth: issue 10's lost SYNs to 169.254.170.2).
func TestGatewayKeepsMACWhenTasksGo(t *testing.T) {
	t.Run("new bridge", func(t *testing.T) { gatewayKeepsMAC(t, 16, false) })
	// A bridge an earlier version made, its MAC picked by the kernel.
	t.Run("earlier bridge", func(t *testing.T) { gatewayKeepsMAC(t, 17, true) })
}

func gatewayKeepsMAC(t *testing.T, third int, preexisting bool) {
	m, spec := newManager(t, third)
	if preexisting {
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: m.BridgeName(spec.VPCID)}}); err != nil {
			t.Fatal(err)
		}
	}
	a, err := m.Setup(ctx(t), "taskmaca", spec)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Teardown(ctx(t), "taskmaca", spec)
	b, err := m.Setup(ctx(t), "taskmacb", spec)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Teardown(ctx(t), "taskmacb", spec)

	br, err := netlink.LinkByName(m.BridgeName(spec.VPCID))
	if err != nil {
		t.Fatal(err)
	}
	before := br.Attrs().HardwareAddr.String()
	// b's host end gets a MAC below any the kernel picks at random.
	var peer int
	if err := ns.WithNetNSPath(b.NetNSPath, func(ns.NetNS) error {
		eth, err := netlink.LinkByName(ifName)
		if err == nil {
			peer = eth.Attrs().ParentIndex
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	veth, err := netlink.LinkByIndex(peer)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetHardwareAddr(veth, net.HardwareAddr{0x02, 0, 0, 0, 0, 1}); err != nil {
		t.Fatal(err)
	}

	// A listener of the host's on the gateway address, as the metadata
	// endpoint is to a task (routed via the gateway).
	ln, err := net.Listen("tcp4", net.JoinHostPort(spec.Gateway, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("host"))
			c.Close()
		}
	}()
	if got, err := dialTimeout(a.NetNSPath, ln.Addr().String(), 2*time.Second); err != nil || got != "host" {
		t.Fatalf("task a to the host at %s: %q %v", ln.Addr(), got, err)
	}
	if err := m.Teardown(ctx(t), "taskmacb", spec); err != nil {
		t.Fatal(err)
	}
	if br, err = netlink.LinkByName(m.BridgeName(spec.VPCID)); err != nil {
		t.Fatal(err)
	}
	if after := br.Attrs().HardwareAddr.String(); after != before {
		t.Errorf("the bridge's MAC changed from %s to %s as its ports came and went", before, after)
	}
	// a's ARP entry for the gateway is still the one it resolved above.
	if got, err := dialTimeout(a.NetNSPath, ln.Addr().String(), 2*time.Second); err != nil || got != "host" {
		t.Errorf("task a to the host after task b stopped: %q %v", got, err)
	}
}
