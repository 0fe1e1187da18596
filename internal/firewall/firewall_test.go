package firewall

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/gantry-dev/gantry/internal/agent"
)

func i32(v int32) *int32 { return &v }

// TestApply renders a state into the kernel and removes it again.
func TestApply(t *testing.T) {
	f := New("gantry-unit-test")
	cfg := Config{
		Tasks: []Task{{ID: "aaa", IP: netip.MustParseAddr("10.9.0.5"), Bridge: "gtr-x1", Groups: []string{"sg-1"}},
			{ID: "bbb", IP: netip.MustParseAddr("10.9.0.6"), Bridge: "gtr-x1", Groups: []string{"sg-2"}}},
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
	out, _ := exec.Command("nft", "list", "table", "ip", "gantry-unit-test").CombinedOutput()
	for _, want := range []string{"ip saddr 10.9.0.0/16 tcp dport 8080-8090 accept", "ip saddr @sg-1 accept", "elements = { 10.9.0.5 }",
		`iifname "gtr-x1" oifname "gtr-*" oifname != "gtr-x1" drop`, "10.9.0.6 : goto in-bbb"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if r, e, err := f.Count(); err != nil || r != 16 || e != 5 {
		t.Errorf("count: %d rules, %d elements, %v; want 16, 5", r, e, err)
	}
	if err := f.Apply(Config{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.Count(); err != ErrNoTable {
		t.Fatal("table left", err)
	}
}
