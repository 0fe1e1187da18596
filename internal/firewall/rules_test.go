package firewall

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/gantry-dev/gantry/internal/agent"
)

// TestOddRulesRender renders rules of every shape a group might hold (any
// protocol text, ports out of range or reversed, CIDRs of any length or
// not parsable) into a real table, as ingress and egress, by an
// incremental update and by a rebuild: the kernel must accept every batch,
// since one rejected rule would leave every task on the host without its
// rules. A rule Gantry cannot express is skipped, never an error.
func TestOddRulesRender(t *testing.T) {
	fw := New(fmt.Sprintf("gantry-unit-odd%d", rand.IntN(1e6)))
	t.Cleanup(func() { fw.Remove() })
	base := Config{BridgePrefix: "gtr-", Groups: map[string]agent.FirewallGroup{},
		Tasks: []Task{{ID: "odd0", IP: netip.MustParseAddr("10.77.0.4"), Bridge: "gtr-odd"}}}
	protos := []string{"tcp", "udp", "icmp", "-1", "all", "", "0", "1", "6", "17", "58", "255", "256", "-2", "TCP", "icmpv6", "x"}
	rng := rand.New(rand.NewPCG(4, 4))
	for i := range 150 {
		from, to := int32(rng.IntN(70000)-2), int32(rng.IntN(70000)-2)
		switch i % 4 {
		case 0:
			to = from
		case 1:
			from, to = -1, -1
		}
		cidr := fmt.Sprintf("%d.%d.%d.0/%d", rng.IntN(256), rng.IntN(256), rng.IntN(256), rng.IntN(34))
		if i%7 == 0 {
			cidr = []string{"::/0", "bad", "", "10.0.0.0/8", "0.0.0.0/0"}[i%5]
		}
		r := agent.FirewallRule{Protocol: protos[rng.IntN(len(protos))], FromPort: &from, ToPort: &to, CIDRs: []string{cidr}, Groups: []string{"sg-odd"}}
		cfg := base
		cfg.Groups = map[string]agent.FirewallGroup{"sg-odd": {ID: "sg-odd", Ingress: []agent.FirewallRule{r}, Egress: []agent.FirewallRule{r}}}
		cfg.Tasks = []Task{{ID: "odd1", IP: netip.MustParseAddr("10.77.0.5"), Bridge: "gtr-odd", Groups: []string{"sg-odd"}}}
		cfg.Members = map[string][]netip.Addr{"sg-odd": {netip.MustParseAddr("10.77.0.5")}}
		if err := fw.Rebuild(base); err != nil {
			t.Fatal(err)
		}
		// update directly: Apply would hide a rejected batch behind its
		// fallback rebuild.
		if err := fw.update(fw.cur, snap(cfg)); err != nil {
			t.Fatalf("incremental update with %+v (%d-%d): %v", r, from, to, err)
		}
		if err := fw.Rebuild(cfg); err != nil {
			t.Fatalf("rebuild with %+v (%d-%d): %v", r, from, to, err)
		}
	}
}
