package ec2

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/gantry-dev/gantry/internal/state"
)

// Document kinds, keyed by account/region/id so one prefix lists a scope.
const (
	kindVPC           = "ec2.vpc"           // -> VPC
	kindSubnet        = "ec2.subnet"        // -> Subnet
	kindSecurityGroup = "ec2.securitygroup" // -> SecurityGroup
	// kindDefaultVPC marks that a scope's default VPC was made, so a
	// deleted default subnet is not silently recreated on the next start.
	kindDefaultVPC = "ec2.defaultvpc" // account/region -> VPC id
)

func scopePrefix(account, region string) string { return account + "/" + region + "/" }

// Tag is an EC2 resource tag.
type Tag struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// VPC is a stored VPC.
type VPC struct {
	ID                string `json:"id"`
	OwnerID           string `json:"ownerId"`
	CIDR              string `json:"cidr"`
	CIDRAssociationID string `json:"cidrAssociationId"`
	DHCPOptionsID     string `json:"dhcpOptionsId"`
	IsDefault         bool   `json:"isDefault"`
	Tags              []Tag  `json:"tags,omitempty"`
}

// Subnet is a stored subnet; the task controller places ENIs in it.
type Subnet struct {
	ID                  string `json:"id"`
	ARN                 string `json:"arn"`
	VPCID               string `json:"vpcId"`
	OwnerID             string `json:"ownerId"`
	CIDR                string `json:"cidr"`
	AvailabilityZone    string `json:"availabilityZone"`
	AvailabilityZoneID  string `json:"availabilityZoneId"`
	DefaultForAz        bool   `json:"defaultForAz"`
	MapPublicIPOnLaunch bool   `json:"mapPublicIpOnLaunch"`
	// Gateway is the subnet's first host address, which AWS reserves for the
	// VPC router; tasks use it as their default route.
	Gateway string `json:"gateway"`
	Tags    []Tag  `json:"tags,omitempty"`
}

// Prefix is the subnet's CIDR parsed.
func (s *Subnet) Prefix() netip.Prefix {
	p, _ := netip.ParsePrefix(s.CIDR)
	return p
}

// AvailableIPAddressCount is the subnet size less the five addresses AWS
// reserves in every subnet (network, router, DNS, future use, broadcast).
func (s *Subnet) AvailableIPAddressCount() int {
	p := s.Prefix()
	if !p.IsValid() {
		return 0
	}
	return 1<<(32-p.Bits()) - 5
}

// SecurityGroup is a stored security group.
type SecurityGroup struct {
	ID          string `json:"id"`
	ARN         string `json:"arn"`
	Name        string `json:"name"`
	Description string `json:"description"`
	VPCID       string `json:"vpcId"`
	OwnerID     string `json:"ownerId"`
	Ingress     []Rule `json:"ingress,omitempty"`
	Egress      []Rule `json:"egress,omitempty"`
	Tags        []Tag  `json:"tags,omitempty"`
}

// Rule is one security group rule. Protocol is "tcp", "udp", "icmp", "-1"
// (all traffic; ports unset) or another IP protocol number (all ports).
// For tcp and udp the ports are a range; for icmp FromPort is the type and
// ToPort the code, -1 meaning any. Rules written by this package have
// exactly one source (one CIDR or one group) and their own sgr- id, as EC2
// keeps them; describes group them back into IpPermissions.
type Rule struct {
	ID          string   `json:"id,omitempty"`
	Protocol    string   `json:"protocol"`
	FromPort    *int32   `json:"fromPort,omitempty"`
	ToPort      *int32   `json:"toPort,omitempty"`
	CIDRs       []string `json:"cidrs,omitempty"`
	GroupIDs    []string `json:"groupIds,omitempty"`
	Description string   `json:"description,omitempty"`
}

// fillRuleIDs gives rules stored before rules had ids a stable one, derived
// from the group and the rule's place, so describes and revokes agree.
func (g *SecurityGroup) fillRuleIDs() {
	for dir, rules := range [][]Rule{g.Ingress, g.Egress} {
		for i := range rules {
			if rules[i].ID == "" {
				sum := sha256.Sum256(fmt.Appendf(nil, "%s/%d/%d", g.ID, dir, i))
				rules[i].ID = "sgr-" + hex.EncodeToString(sum[:])[:17]
			}
		}
	}
}

// LookupSubnet returns the subnet with id in the scope, or nil when there is
// none.
func LookupSubnet(tx state.Tx, account, region, subnetID string) (*Subnet, error) {
	var s Subnet
	ok, err := tx.Get(kindSubnet, scopePrefix(account, region)+subnetID, &s)
	if err != nil || !ok {
		return nil, err
	}
	return &s, nil
}

// LookupSecurityGroup returns the security group with id in the scope, or
// nil when there is none.
func LookupSecurityGroup(tx state.Tx, account, region, groupID string) (*SecurityGroup, error) {
	var g SecurityGroup
	ok, err := tx.Get(kindSecurityGroup, scopePrefix(account, region)+groupID, &g)
	if err != nil || !ok {
		return nil, err
	}
	g.fillRuleIDs()
	return &g, nil
}

// SecurityGroups returns every security group of the scope, ordered by id.
func SecurityGroups(tx state.Tx, account, region string) ([]SecurityGroup, error) {
	groups, err := state.List[SecurityGroup](tx, kindSecurityGroup, scopePrefix(account, region))
	for i := range groups {
		groups[i].fillRuleIDs()
	}
	return groups, err
}

// SecurityGroupsOfVPC returns the security groups of one VPC, ordered by id.
func SecurityGroupsOfVPC(tx state.Tx, account, region, vpcID string) ([]SecurityGroup, error) {
	all, err := SecurityGroups(tx, account, region)
	return slices.DeleteFunc(all, func(g SecurityGroup) bool { return g.VPCID != vpcID }), err
}

// VPCDefaultSecurityGroup returns a VPC's "default" group, or nil.
func VPCDefaultSecurityGroup(tx state.Tx, account, region, vpcID string) (*SecurityGroup, error) {
	return groupByName(tx, account, region, vpcID, "default")
}

// VPCs returns every VPC of the scope, ordered by id.
func VPCs(tx state.Tx, account, region string) ([]VPC, error) {
	return state.List[VPC](tx, kindVPC, scopePrefix(account, region))
}

// Subnets returns the subnets of one VPC (every subnet of the scope when
// vpcID is empty), ordered by id.
func Subnets(tx state.Tx, account, region, vpcID string) ([]Subnet, error) {
	all, err := state.List[Subnet](tx, kindSubnet, scopePrefix(account, region))
	return slices.DeleteFunc(all, func(s Subnet) bool { return vpcID != "" && s.VPCID != vpcID }), err
}

// LookupVPC returns the VPC with id in the scope, or nil when there is none.
func LookupVPC(tx state.Tx, account, region, vpcID string) (*VPC, error) {
	var v VPC
	ok, err := tx.Get(kindVPC, scopePrefix(account, region)+vpcID, &v)
	if err != nil || !ok {
		return nil, err
	}
	return &v, nil
}

// DefaultSubnets returns the scope's default subnets (one per availability
// zone), ordered by zone.
func DefaultSubnets(tx state.Tx, account, region string) ([]*Subnet, error) {
	all, err := state.List[Subnet](tx, kindSubnet, scopePrefix(account, region))
	if err != nil {
		return nil, err
	}
	var out []*Subnet
	for i := range all {
		if all[i].DefaultForAz {
			out = append(out, &all[i])
		}
	}
	slices.SortFunc(out, func(a, b *Subnet) int { return strings.Compare(a.AvailabilityZone, b.AvailabilityZone) })
	return out, nil
}

// DefaultSecurityGroup returns the default VPC's "default" group, or nil.
func DefaultSecurityGroup(tx state.Tx, account, region string) (*SecurityGroup, error) {
	vpcID, err := defaultVPCID(tx, account, region)
	if err != nil || vpcID == "" {
		return nil, err
	}
	return groupByName(tx, account, region, vpcID, "default")
}

// noDefaultVPC marks a scope whose default VPC was deleted.
const noDefaultVPC = "none"

func defaultVPCID(tx state.Tx, account, region string) (string, error) {
	var id string
	_, err := tx.Get(kindDefaultVPC, scopePrefix(account, region), &id)
	if id == noDefaultVPC {
		id = ""
	}
	return id, err
}

func defaultVPCMade(tx state.Tx, account, region string) (bool, error) {
	var id string
	return tx.Get(kindDefaultVPC, scopePrefix(account, region), &id)
}

func groupByName(tx state.Tx, account, region, vpcID, name string) (*SecurityGroup, error) {
	groups, err := SecurityGroups(tx, account, region)
	if err != nil {
		return nil, err
	}
	for i := range groups {
		if groups[i].VPCID == vpcID && groups[i].Name == name {
			return &groups[i], nil
		}
	}
	return nil, nil
}

// Zones are the availability zones Gantry presents in every region: the
// suffixes AWS gives the first three zones of a region.
var zoneSuffixes = []string{"a", "b", "c"}

// zoneID makes an AZ id the way AWS spells them ("use1-az1" for us-east-1):
// the region's short code, then the zone's number.
func zoneID(region string, i int) string {
	short := map[string]string{"north": "n", "south": "s", "east": "e", "west": "w", "central": "c",
		"northeast": "ne", "northwest": "nw", "southeast": "se", "southwest": "sw"}
	parts := strings.Split(region, "-")
	code := ""
	for j, p := range parts {
		if s, ok := short[p]; ok && j > 0 {
			code += s
		} else {
			code += p
		}
	}
	return fmt.Sprintf("%s-az%d", code, i+1)
}

// DefaultVPCCIDR is the default VPC's range in every AWS account.
const DefaultVPCCIDR = "172.31.0.0/16"

// EnsureDefaultVPC creates the account's default VPC, subnets and security
// group in region if they do not exist yet. cidr is the VPC's range (empty:
// AWS's 172.31.0.0/16); hosts whose own network already uses that range, or
// several servers on one host, need another.
func EnsureDefaultVPC(ctx context.Context, store state.Store, account, region, cidr string) error {
	if cidr == "" {
		cidr = DefaultVPCCIDR
	}
	vpcRange, err := netip.ParsePrefix(cidr)
	if err != nil || !vpcRange.Addr().Is4() || vpcRange.Bits() < 16 || vpcRange.Bits() > 24 || vpcRange.Masked() != vpcRange {
		return fmt.Errorf("default VPC CIDR %q: want an IPv4 network from /16 to /24, such as 10.88.0.0/16", cidr)
	}
	var exists bool
	if err := store.View(ctx, func(tx state.Tx) error {
		var err error
		exists, err = defaultVPCMade(tx, account, region)
		return err
	}); err != nil || exists {
		return err
	}
	return store.Update(ctx, func(tx state.Tx) error {
		if made, err := defaultVPCMade(tx, account, region); err != nil || made {
			return err
		}
		return createDefaultVPC(tx, account, region, vpcRange)
	})
}

func createDefaultVPC(tx state.Tx, account, region string, vpcRange netip.Prefix) error {
	prefix := scopePrefix(account, region)
	vpc := VPC{
		ID:                newID("vpc"),
		OwnerID:           account,
		CIDR:              vpcRange.String(),
		CIDRAssociationID: newID("vpc-cidr-assoc"),
		DHCPOptionsID:     newID("dopt"),
		IsDefault:         true,
	}
	if err := tx.Put(kindVPC, prefix+vpc.ID, vpc); err != nil {
		return err
	}
	// The first blocks a sixteenth of the VPC each, as AWS lays them out:
	// 172.31.0.0/20, 172.31.16.0/20, 172.31.32.0/20.
	bits := vpcRange.Bits() + 4
	base := vpcRange.Addr().As4()
	for i, suffix := range zoneSuffixes {
		n := binary.BigEndian.Uint32(base[:]) + uint32(i)<<(32-bits)
		var a [4]byte
		binary.BigEndian.PutUint32(a[:], n)
		network := netip.AddrFrom4(a)
		id := newID("subnet")
		s := Subnet{
			ID:                  id,
			ARN:                 fmt.Sprintf("arn:aws:ec2:%s:%s:subnet/%s", region, account, id),
			VPCID:               vpc.ID,
			OwnerID:             account,
			CIDR:                netip.PrefixFrom(network, bits).String(),
			AvailabilityZone:    region + suffix,
			AvailabilityZoneID:  zoneID(region, i),
			DefaultForAz:        true,
			MapPublicIPOnLaunch: true,
			Gateway:             network.Next().String(),
		}
		if err := tx.Put(kindSubnet, prefix+s.ID, s); err != nil {
			return err
		}
	}
	if err := putDefaultGroup(tx, account, region, vpc.ID); err != nil {
		return err
	}
	return tx.Put(kindDefaultVPC, prefix, vpc.ID)
}

// putDefaultGroup makes a VPC's "default" security group: its members may
// talk to each other, nothing else may come in, everything may go out.
func putDefaultGroup(tx state.Tx, account, region, vpcID string) error {
	gid := newID("sg")
	sg := SecurityGroup{
		ID:          gid,
		ARN:         groupARN(account, region, gid),
		Name:        "default",
		Description: "default VPC security group",
		VPCID:       vpcID,
		OwnerID:     account,
		Ingress:     []Rule{{ID: newID("sgr"), Protocol: "-1", GroupIDs: []string{gid}}},
		Egress:      []Rule{{ID: newID("sgr"), Protocol: "-1", CIDRs: []string{"0.0.0.0/0"}}},
	}
	return tx.Put(kindSecurityGroup, scopePrefix(account, region)+sg.ID, sg)
}

func groupARN(account, region, id string) string {
	return fmt.Sprintf("arn:aws:ec2:%s:%s:security-group/%s", region, account, id)
}

// newID makes a resource id in AWS's long form: prefix, dash, 17 hex digits.
func newID(prefix string) string {
	var b [9]byte
	rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])[:17]
}
