package local

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/gantry-dev/gantry/internal/agent"
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
