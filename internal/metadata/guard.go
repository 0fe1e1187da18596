package metadata

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// guard lets only the host (lo) and tasks (Gantry's bridges, gtr-*) open
// connections to this server's ports on Address. Address is link-local
// and normally unrouted, but a machine on the host's own network could
// still route it here, as could containers of other runtimes on the host:
// they are dropped before they reach the API (which would still demand a
// signature) or the metadata (which still checks the caller's address).
//
// One table of the server's own, rewritten whole in one batch (the kernel
// applies it atomically), removed by Close.
func (s *Server) guard() error {
	var ports []uint16
	for _, p := range []uint16{s.port, s.apiPort} {
		if p != 0 {
			ports = append(ports, p)
		}
	}
	c, err := nftables.New()
	if err != nil {
		return err
	}
	t := &nftables.Table{Name: guardTable(s.dataDir), Family: nftables.TableFamilyIPv4}
	c.AddTable(t)
	c.FlushTable(t)
	accept := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	addr := netip.MustParseAddr(Address).As4()
	for _, port := range ports {
		match := []expr.Any{
			// ip daddr Address
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr[:]},
			// tcp dport port
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
		}
		rule := func(tail ...expr.Any) {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: append(append([]expr.Any{}, match...), tail...)})
		}
		// iifname "lo": the host itself. An interface name is compared
		// as 16 bytes, NUL-padded; a shorter datum compares a prefix,
		// which is how "gtr-*" matches every Gantry bridge.
		lo := make([]byte, unix.IFNAMSIZ)
		copy(lo, "lo")
		rule(&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: lo},
			&expr.Verdict{Kind: expr.VerdictAccept})
		rule(&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(bridgePrefix)},
			&expr.Verdict{Kind: expr.VerdictAccept})
		rule(&expr.Verdict{Kind: expr.VerdictDrop})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables table %s: %w", t.Name, err)
	}
	return nil
}

// bridgePrefix starts the name of every Gantry bridge (netw.BridgeName).
const bridgePrefix = "gtr-"

// unguard removes the guard's table, when the server's listeners close.
func (s *Server) unguard() {
	c, err := nftables.New()
	if err != nil {
		return
	}
	c.DelTable(&nftables.Table{Name: guardTable(s.dataDir), Family: nftables.TableFamilyIPv4})
	if err := c.Flush(); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOENT) {
		s.log.Warn("removing the task endpoint's nftables table", "err", err)
	}
}
