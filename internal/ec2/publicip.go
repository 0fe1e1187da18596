package ec2

import (
	"encoding/json"
	"fmt"
	"net/netip"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/model"
	"github.com/gantry-dev/gantry/internal/state"
)

// DefaultPublicIPRange is where ENIs' public addresses come from unless
// the server is told otherwise (--public-ip-range). It is part of
// 198.18.0.0/15, which RFC 2544 sets aside for benchmarking networks: never
// routed on the internet, and unlike 100.64.0.0/10 (carrier NAT, Tailscale)
// or the private ranges (VPCs, home and office networks) not in use on the
// hosts Gantry runs on.
const DefaultPublicIPRange = "198.19.0.0/16"

// PublicIPRange is the server's range of public addresses. One server
// runs per process, so it is set once at start-up.
var PublicIPRange = netip.MustParsePrefix(DefaultPublicIPRange)

// ParsePublicIPRange checks a --public-ip-range value.
func ParsePublicIPRange(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("public IP range %q: want an IPv4 CIDR such as %s", s, DefaultPublicIPRange)
	}
	if p.Bits() > 30 {
		return netip.Prefix{}, fmt.Errorf("public IP range %q: at most /30", s)
	}
	return p.Masked(), nil
}

// AssignPublicIP returns a public address for a new ENI when nc asks for
// one (assignPublicIp ENABLED), else "". AWS gives the address whether or
// not the VPC has an internet gateway (without one nothing reaches it);
// the address is free among every live task's on this server, in any
// account, because the host forwards it.
func AssignPublicIP(tx state.Tx, nc *ecstypes.NetworkConfiguration) (string, error) {
	if nc == nil || nc.AwsvpcConfiguration == nil || ecstypes.Deref(nc.AwsvpcConfiguration.AssignPublicIp) != "ENABLED" {
		return "", nil
	}
	used := map[netip.Addr]bool{}
	err := tx.Scan(model.KindTask, "", "", 0, func(_ string, data []byte) error {
		var r model.TaskRecord
		if err := json.Unmarshal(data, &r); err != nil {
			return err
		}
		if r.Spec == nil || r.Spec.Network.PublicIPv4 == "" || ecstypes.Deref(r.Task.LastStatus) == "STOPPED" {
			return nil
		}
		if a, err := netip.ParseAddr(r.Spec.Network.PublicIPv4); err == nil {
			used[a] = true
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	p := PublicIPRange
	// The first and last address of the range are its network and
	// broadcast addresses when it is routed somewhere as a subnet.
	for a := p.Addr().Next(); p.Contains(a) && p.Contains(a.Next()); a = a.Next() {
		if !used[a] {
			return a.String(), nil
		}
	}
	return "", awsapi.InvalidParameter("assignPublicIp: every public IPv4 address of this server's range %s is in use.", p)
}

// HasInternetGateway reports whether traffic from outside reaches public
// addresses in the VPC. Gantry has no internet gateway API: as in a new AWS
// account, the default VPC has one and VPCs made with CreateVpc do not.
func HasInternetGateway(tx state.Tx, account, region, vpcID string) (bool, error) {
	v, err := LookupVPC(tx, account, region, vpcID)
	if err != nil || v == nil {
		return false, err
	}
	return v.IsDefault, nil
}
