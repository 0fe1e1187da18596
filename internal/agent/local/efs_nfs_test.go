package local

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/efsfuse"
)

// Which sources a mount target's groups let reach NFS: rules covering TCP
// 2049 (all traffic, TCP without ports, a range around 2049) count, with
// their CIDRs and their source groups' members; other ports and UDP do
// not.
func TestNFSSources(t *testing.T) {
	p := func(v int32) *int32 { return &v }
	groups := map[string]agent.FirewallGroup{
		"sg-efs": {ID: "sg-efs", Ingress: []agent.FirewallRule{
			{Protocol: "tcp", FromPort: p(2049), ToPort: p(2049), Groups: []string{"sg-app"}},
			{Protocol: "tcp", FromPort: p(80), ToPort: p(80), CIDRs: []string{"10.9.0.0/16"}},
			{Protocol: "udp", FromPort: p(2049), ToPort: p(2049), CIDRs: []string{"10.8.0.0/16"}},
			{Protocol: "tcp", FromPort: p(2000), ToPort: p(3000), CIDRs: []string{"10.7.1.9/24"}},
		}},
		"sg-all": {ID: "sg-all", Ingress: []agent.FirewallRule{{Protocol: "-1", Groups: []string{"sg-all"}}}},
	}
	members := map[string][]netip.Addr{
		"sg-app": {netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("10.0.0.6")},
		"sg-all": {netip.MustParseAddr("10.0.0.7")},
	}
	got := nfsSources([]string{"sg-efs", "sg-all", "sg-missing"}, groups, members)
	want := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.5/32"), netip.MustParsePrefix("10.0.0.6/32"),
		netip.MustParsePrefix("10.0.0.7/32"), netip.MustParsePrefix("10.7.1.0/24"),
	}
	if !slices.Equal(got, want) {
		t.Errorf("sources %v, want %v", got, want)
	}
	if got := nfsSources([]string{"sg-efs"}, groups, nil); !slices.Equal(got, want[3:]) {
		t.Errorf("without members: %v", got)
	}
	if m := netipMask(20); netip.AddrFrom4([4]byte(m)) != netip.MustParseAddr("255.255.240.0") {
		t.Errorf("mask /20: %v", m)
	}
}

// A sandboxed task with an EFS volume runs on its namespace's kernel
// stack in NFS mode only; and each sandboxed container's NFS mount is the
// export and view its user needs.
func TestSandboxNFS(t *testing.T) {
	efs := agent.TaskSpec{Isolation: agent.IsolationSandbox, Containers: []agent.ContainerSpec{
		{Name: "a"}, {Name: "b", Mounts: []agent.Mount{{Volume: "v", EFS: &agent.EFSMount{FileSystemID: "fs-1"}}}},
	}}
	plain := agent.TaskSpec{Isolation: agent.IsolationSandbox, Containers: []agent.ContainerSpec{{Name: "a"}}}
	runc := efs
	runc.Isolation = agent.IsolationContainer
	for _, c := range []struct {
		mode string
		spec agent.TaskSpec
		want bool
	}{{"nfs", efs, true}, {"local", efs, false}, {"nfs", plain, false}, {"nfs", runc, false}} {
		if got := efsNFSHostNetwork(c.mode, c.spec); got != c.want {
			t.Errorf("host network for %s mode, isolation %s, %d containers: %v, want %v", c.mode, c.spec.Isolation, len(c.spec.Containers), got, c.want)
		}
	}

	ap := &agent.EFSMount{FileSystemID: "fs-1", AccessPointID: "fsap-1", User: &agent.EFSUser{UID: 1001, GID: 1001, SecondaryGIDs: []uint32{2000}}}
	squashed := &agent.EFSMount{FileSystemID: "fs-1", Root: "/d", RootSquash: true}
	user, root := &efsfuse.Client{UID: 1234, GID: 1234}, &efsfuse.Client{}
	if m, v := sandboxNFS(ap, nil); m != ap || v != nil {
		t.Errorf("runc: %+v %+v, want the mount as it is", m, v)
	}
	if m, v := sandboxNFS(ap, user); m != ap || v == nil || v.UID != 1001 || v.Client != user || len(v.Groups) != 1 {
		t.Errorf("access point, user: %+v %+v", m, v)
	}
	if m, v := sandboxNFS(squashed, root); m != squashed || v == nil || v.UID != efsfuse.Anonymous || v.OwnerUID(0) != efsfuse.Anonymous {
		t.Errorf("root squashed, root: %+v %+v, want the squashed export with root's chowns to 65534", m, v)
	}
	if m, v := sandboxNFS(squashed, user); m.RootSquash || v != nil || nfsExport(m) != "/fs-1/d" || nfsExport(squashed) != "/fs-1/d#root-squash" {
		t.Errorf("root squashed, user: %+v %+v (export %s), want the unsquashed export", m, v, nfsExport(m))
	}
}
