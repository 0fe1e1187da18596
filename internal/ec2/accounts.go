package ec2

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"

	"github.com/gantry-dev/gantry/internal/state"
)

// AccountVPCs gives every account its own default VPC, subnets and default
// security group, as a new AWS account has, the first time this server
// sees a request from it: accounts are made by `gantry accounts create`,
// another process, so the server learns of them from their first call.
type AccountVPCs struct {
	Store  state.Store
	Region string
	done   sync.Map // account ids whose default VPC is known to exist
}

// Ensure makes account's default VPC in the server's region unless it
// exists. Every AWS default VPC is 172.31.0.0/16, but one host can route a
// range to one VPC bridge only, so each further account takes a /16 of
// 10.0.0.0/8 that no VPC of this server and no route of the host uses.
func (a *AccountVPCs) Ensure(ctx context.Context, account string) error {
	if _, ok := a.done.Load(account); ok || account == "" {
		return nil
	}
	var exists bool
	var used []netip.Prefix
	err := a.Store.View(ctx, func(tx state.Tx) error {
		var err error
		if exists, err = defaultVPCMade(tx, account, a.Region); err != nil || exists {
			return err
		}
		vpcs, err := state.List[VPC](tx, kindVPC, "")
		for _, v := range vpcs {
			if p, perr := netip.ParsePrefix(v.CIDR); perr == nil {
				used = append(used, p)
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	if !exists {
		cidr, err := freeRange(used)
		if err != nil {
			return err
		}
		if err := EnsureDefaultVPC(ctx, a.Store, account, a.Region, cidr); err != nil {
			return err
		}
	}
	a.done.Store(account, struct{}{})
	return nil
}

// freeRange picks a random 10.N.0.0/16 (N from 100, below the ranges
// people tend to use by hand) that overlaps none of used and no route.
func freeRange(used []netip.Prefix) (string, error) {
	if routes, err := netlink.RouteList(nil, netlink.FAMILY_V4); err == nil {
		for _, r := range routes {
			if r.Dst != nil {
				if p, ok := netip.AddrFromSlice(r.Dst.IP.To4()); ok {
					ones, _ := r.Dst.Mask.Size()
					if ones > 0 {
						used = append(used, netip.PrefixFrom(p, ones).Masked())
					}
				}
			}
		}
	}
	var b [1]byte
	for range 1000 {
		rand.Read(b[:])
		p := netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/16", 100+int(b[0])%150))
		free := true
		for _, u := range used {
			if u.Overlaps(p) {
				free = false
				break
			}
		}
		if free {
			return p.String(), nil
		}
	}
	return "", fmt.Errorf("no free /16 in 10.100.0.0-10.249.255.255 for a default VPC")
}
