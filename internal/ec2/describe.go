package ec2

import (
	"slices"
	"strconv"
	"strings"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/state"
)

// XML output shapes, named and nested as the ec2 model's locationNames say.

type tagXML struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

func tagsXML(tags []Tag) []tagXML {
	out := make([]tagXML, len(tags))
	for i, t := range tags {
		out[i] = tagXML(t)
	}
	return out
}

type cidrStateXML struct {
	State string `xml:"state"`
}

type cidrAssocXML struct {
	AssociationID  string       `xml:"associationId"`
	CidrBlock      string       `xml:"cidrBlock"`
	CidrBlockState cidrStateXML `xml:"cidrBlockState"`
}

type blockPublicAccessXML struct {
	InternetGatewayBlockMode string `xml:"internetGatewayBlockMode"`
}

type vpcXML struct {
	VpcID                   string               `xml:"vpcId"`
	OwnerID                 string               `xml:"ownerId"`
	State                   string               `xml:"state"`
	CidrBlock               string               `xml:"cidrBlock"`
	CidrBlockAssociationSet []cidrAssocXML       `xml:"cidrBlockAssociationSet>item"`
	DhcpOptionsID           string               `xml:"dhcpOptionsId"`
	InstanceTenancy         string               `xml:"instanceTenancy"`
	IsDefault               bool                 `xml:"isDefault"`
	BlockPublicAccessStates blockPublicAccessXML `xml:"blockPublicAccessStates"`
	TagSet                  []tagXML             `xml:"tagSet>item"`
}

type describeVpcsResponse struct {
	ResponseHeader
	VpcSet    []vpcXML `xml:"vpcSet>item"`
	NextToken string   `xml:"nextToken,omitempty"`
}

func (s *Service) describeVpcs(r *request) (response, error) {
	ids := r.list("VpcId")
	fs := r.filters()
	p, err := r.paging("vpcIds", len(ids) > 0)
	if err != nil {
		return nil, err
	}
	if err := checkIDs("InvalidVpcID.Malformed", "vpc", ids); err != nil {
		return nil, err
	}
	var vpcs []VPC
	err = s.Store.View(r.ctx, func(tx state.Tx) error {
		vpcs, err = state.List[VPC](tx, kindVPC, scopePrefix(r.account, r.region))
		return err
	})
	if err != nil {
		return nil, err
	}
	vpcs, err = selectByID(vpcs, func(v VPC) string { return v.ID }, ids, "InvalidVpcID.NotFound", "vpc ID")
	if err != nil {
		return nil, err
	}
	var matched []VPC
	for _, v := range vpcs {
		ok, err := matchAll(fs, func(name string) ([]string, bool) {
			switch name {
			case "vpc-id":
				return []string{v.ID}, true
			case "cidr", "cidr-block-association.cidr-block", "cidrBlock":
				return []string{v.CIDR}, true
			case "cidr-block-association.association-id":
				return []string{v.CIDRAssociationID}, true
			case "cidr-block-association.state":
				return []string{"associated"}, true
			case "dhcp-options-id":
				return []string{v.DHCPOptionsID}, true
			case "is-default", "isDefault":
				return []string{boolString(v.IsDefault)}, true
			case "owner-id":
				return []string{v.OwnerID}, true
			case "state":
				return []string{"available"}, true
			}
			return tagAttrs(v.Tags, name)
		})
		if err != nil {
			return nil, err
		}
		if ok {
			matched = append(matched, v)
		}
	}
	matched, next := page(matched, func(v VPC) string { return v.ID }, p)
	out := &describeVpcsResponse{NextToken: next, VpcSet: []vpcXML{}}
	for _, v := range matched {
		out.VpcSet = append(out.VpcSet, v.xml())
	}
	return out, nil
}

func (v *VPC) xml() vpcXML {
	return vpcXML{
		VpcID:     v.ID,
		OwnerID:   v.OwnerID,
		State:     "available",
		CidrBlock: v.CIDR,
		CidrBlockAssociationSet: []cidrAssocXML{{
			AssociationID: v.CIDRAssociationID, CidrBlock: v.CIDR, CidrBlockState: cidrStateXML{"associated"},
		}},
		DhcpOptionsID:           v.DHCPOptionsID,
		InstanceTenancy:         "default",
		IsDefault:               v.IsDefault,
		BlockPublicAccessStates: blockPublicAccessXML{"off"},
		TagSet:                  tagsXML(v.Tags),
	}
}

type privateDNSOptionsXML struct {
	HostnameType                    string `xml:"hostnameType"`
	EnableResourceNameDnsARecord    bool   `xml:"enableResourceNameDnsARecord"`
	EnableResourceNameDnsAAAARecord bool   `xml:"enableResourceNameDnsAAAARecord"`
}

type subnetXML struct {
	SubnetID                      string               `xml:"subnetId"`
	SubnetArn                     string               `xml:"subnetArn"`
	State                         string               `xml:"state"`
	VpcID                         string               `xml:"vpcId"`
	OwnerID                       string               `xml:"ownerId"`
	CidrBlock                     string               `xml:"cidrBlock"`
	Ipv6CidrBlockAssociationSet   []struct{}           `xml:"ipv6CidrBlockAssociationSet>item"`
	AvailableIPAddressCount       int                  `xml:"availableIpAddressCount"`
	AvailabilityZone              string               `xml:"availabilityZone"`
	AvailabilityZoneID            string               `xml:"availabilityZoneId"`
	DefaultForAz                  bool                 `xml:"defaultForAz"`
	MapPublicIPOnLaunch           bool                 `xml:"mapPublicIpOnLaunch"`
	MapCustomerOwnedIPOnLaunch    bool                 `xml:"mapCustomerOwnedIpOnLaunch"`
	AssignIpv6AddressOnCreation   bool                 `xml:"assignIpv6AddressOnCreation"`
	EnableDns64                   bool                 `xml:"enableDns64"`
	Ipv6Native                    bool                 `xml:"ipv6Native"`
	PrivateDNSNameOptionsOnLaunch privateDNSOptionsXML `xml:"privateDnsNameOptionsOnLaunch"`
	BlockPublicAccessStates       blockPublicAccessXML `xml:"blockPublicAccessStates"`
	TagSet                        []tagXML             `xml:"tagSet>item"`
}

type describeSubnetsResponse struct {
	ResponseHeader
	SubnetSet []subnetXML `xml:"subnetSet>item"`
	NextToken string      `xml:"nextToken,omitempty"`
}

func (s *Service) describeSubnets(r *request) (response, error) {
	ids := r.list("SubnetId")
	fs := r.filters()
	p, err := r.paging("subnetIds", len(ids) > 0)
	if err != nil {
		return nil, err
	}
	if err := checkIDs("InvalidSubnetID.Malformed", "subnet", ids); err != nil {
		return nil, err
	}
	var subnets []Subnet
	err = s.Store.View(r.ctx, func(tx state.Tx) error {
		subnets, err = state.List[Subnet](tx, kindSubnet, scopePrefix(r.account, r.region))
		return err
	})
	if err != nil {
		return nil, err
	}
	subnets, err = selectByID(subnets, func(v Subnet) string { return v.ID }, ids, "InvalidSubnetID.NotFound", "subnet ID")
	if err != nil {
		return nil, err
	}
	var matched []Subnet
	for _, sn := range subnets {
		ok, err := matchAll(fs, func(name string) ([]string, bool) {
			switch name {
			case "subnet-id", "subnetId":
				return []string{sn.ID}, true
			case "subnet-arn":
				return []string{sn.ARN}, true
			case "vpc-id", "vpcId":
				return []string{sn.VPCID}, true
			case "availability-zone", "availabilityZone":
				return []string{sn.AvailabilityZone}, true
			case "availability-zone-id", "availabilityZoneId":
				return []string{sn.AvailabilityZoneID}, true
			case "cidr", "cidr-block", "cidrBlock", "ipv4-cidr-block-association.cidr-block":
				return []string{sn.CIDR}, true
			case "default-for-az", "defaultForAz":
				return []string{boolString(sn.DefaultForAz)}, true
			case "map-public-ip-on-launch":
				return []string{boolString(sn.MapPublicIPOnLaunch)}, true
			case "available-ip-address-count":
				return []string{strconv.Itoa(sn.AvailableIPAddressCount())}, true
			case "owner-id":
				return []string{sn.OwnerID}, true
			case "state":
				return []string{"available"}, true
			}
			return tagAttrs(sn.Tags, name)
		})
		if err != nil {
			return nil, err
		}
		if ok {
			matched = append(matched, sn)
		}
	}
	matched, next := page(matched, func(v Subnet) string { return v.ID }, p)
	out := &describeSubnetsResponse{NextToken: next, SubnetSet: []subnetXML{}}
	for _, sn := range matched {
		out.SubnetSet = append(out.SubnetSet, sn.xml())
	}
	return out, nil
}

func (sn *Subnet) xml() subnetXML {
	return subnetXML{
		SubnetID:                      sn.ID,
		SubnetArn:                     sn.ARN,
		State:                         "available",
		VpcID:                         sn.VPCID,
		OwnerID:                       sn.OwnerID,
		CidrBlock:                     sn.CIDR,
		AvailableIPAddressCount:       sn.AvailableIPAddressCount(),
		AvailabilityZone:              sn.AvailabilityZone,
		AvailabilityZoneID:            sn.AvailabilityZoneID,
		DefaultForAz:                  sn.DefaultForAz,
		MapPublicIPOnLaunch:           sn.MapPublicIPOnLaunch,
		PrivateDNSNameOptionsOnLaunch: privateDNSOptionsXML{HostnameType: "ip-name"},
		BlockPublicAccessStates:       blockPublicAccessXML{"off"},
		TagSet:                        tagsXML(sn.Tags),
	}
}

type groupPairXML struct {
	Description string `xml:"description,omitempty"`
	UserID      string `xml:"userId"`
	GroupID     string `xml:"groupId"`
}

type ipRangeXML struct {
	Description string `xml:"description,omitempty"`
	CidrIP      string `xml:"cidrIp"`
}

type ipPermissionXML struct {
	IPProtocol    string         `xml:"ipProtocol"`
	FromPort      *int32         `xml:"fromPort,omitempty"`
	ToPort        *int32         `xml:"toPort,omitempty"`
	Groups        []groupPairXML `xml:"groups>item"`
	IPRanges      []ipRangeXML   `xml:"ipRanges>item"`
	Ipv6Ranges    []struct{}     `xml:"ipv6Ranges>item"`
	PrefixListIDs []struct{}     `xml:"prefixListIds>item"`
}

type securityGroupXML struct {
	OwnerID             string            `xml:"ownerId"`
	GroupID             string            `xml:"groupId"`
	GroupName           string            `xml:"groupName"`
	GroupDescription    string            `xml:"groupDescription"`
	IPPermissions       []ipPermissionXML `xml:"ipPermissions>item"`
	IPPermissionsEgress []ipPermissionXML `xml:"ipPermissionsEgress>item"`
	VpcID               string            `xml:"vpcId"`
	SecurityGroupArn    string            `xml:"securityGroupArn"`
	TagSet              []tagXML          `xml:"tagSet>item"`
}

type describeSecurityGroupsResponse struct {
	ResponseHeader
	SecurityGroupInfo []securityGroupXML `xml:"securityGroupInfo>item"`
	NextToken         string             `xml:"nextToken,omitempty"`
}

// permissionsXML groups rules into IpPermissions by protocol and ports, as
// EC2 shows them, in the order the first rule of each appeared.
func permissionsXML(owner string, rules []Rule) []ipPermissionXML {
	out := make([]ipPermissionXML, 0, len(rules))
	for _, r := range rules {
		i := slices.IndexFunc(out, func(p ipPermissionXML) bool {
			return p.IPProtocol == r.Protocol && eqPort(p.FromPort, r.FromPort) && eqPort(p.ToPort, r.ToPort)
		})
		if i < 0 {
			out = append(out, ipPermissionXML{IPProtocol: r.Protocol, FromPort: r.FromPort, ToPort: r.ToPort})
			i = len(out) - 1
		}
		for _, g := range r.GroupIDs {
			out[i].Groups = append(out[i].Groups, groupPairXML{Description: r.Description, UserID: owner, GroupID: g})
		}
		for _, c := range r.CIDRs {
			out[i].IPRanges = append(out[i].IPRanges, ipRangeXML{Description: r.Description, CidrIP: c})
		}
	}
	return out
}

func eqPort(a, b *int32) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

func (s *Service) describeSecurityGroups(r *request) (response, error) {
	ids := r.list("GroupId")
	names := r.list("GroupName")
	fs := r.filters()
	p, err := r.paging("groupIds", len(ids)+len(names) > 0)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if !strings.HasPrefix(id, "sg-") {
			return nil, awsapi.Errorf("InvalidGroupId.Malformed", "Invalid id: \"%s\" (expecting \"sg-...\")", id)
		}
	}
	var groups []SecurityGroup
	var defaultVPC string
	err = s.Store.View(r.ctx, func(tx state.Tx) error {
		if defaultVPC, err = defaultVPCID(tx, r.account, r.region); err != nil {
			return err
		}
		groups, err = SecurityGroups(tx, r.account, r.region)
		return err
	})
	if err != nil {
		return nil, err
	}
	groups, err = selectByID(groups, func(g SecurityGroup) string { return g.ID }, ids, "InvalidGroup.NotFound", "security group")
	if err != nil {
		return nil, err
	}
	// Group names without a VPC filter name groups of the default VPC, as
	// EC2 resolves them.
	if len(names) > 0 {
		var byName []SecurityGroup
		for _, n := range names {
			i := slices.IndexFunc(groups, func(g SecurityGroup) bool { return g.Name == n && g.VPCID == defaultVPC })
			if i < 0 {
				return nil, awsapi.Errorf("InvalidGroup.NotFound", "The security group '%s' does not exist in default VPC '%s'", n, defaultVPC)
			}
			if !slices.ContainsFunc(byName, func(g SecurityGroup) bool { return g.ID == groups[i].ID }) {
				byName = append(byName, groups[i])
			}
		}
		groups = byName
		slices.SortFunc(groups, func(a, b SecurityGroup) int { return strings.Compare(a.ID, b.ID) })
	}
	var matched []SecurityGroup
	for _, g := range groups {
		ok, err := matchAll(fs, func(name string) ([]string, bool) {
			switch name {
			case "group-id":
				return []string{g.ID}, true
			case "group-name":
				return []string{g.Name}, true
			case "description":
				return []string{g.Description}, true
			case "vpc-id":
				return []string{g.VPCID}, true
			case "owner-id":
				return []string{g.OwnerID}, true
			case "ip-permission.protocol":
				return ruleValues(g.Ingress, func(r Rule) []string { return []string{r.Protocol} }), true
			case "ip-permission.cidr":
				return ruleValues(g.Ingress, func(r Rule) []string { return r.CIDRs }), true
			case "ip-permission.group-id":
				return ruleValues(g.Ingress, func(r Rule) []string { return r.GroupIDs }), true
			case "egress.ip-permission.protocol":
				return ruleValues(g.Egress, func(r Rule) []string { return []string{r.Protocol} }), true
			case "egress.ip-permission.cidr":
				return ruleValues(g.Egress, func(r Rule) []string { return r.CIDRs }), true
			}
			return tagAttrs(g.Tags, name)
		})
		if err != nil {
			return nil, err
		}
		if ok {
			matched = append(matched, g)
		}
	}
	matched, next := page(matched, func(g SecurityGroup) string { return g.ID }, p)
	out := &describeSecurityGroupsResponse{NextToken: next, SecurityGroupInfo: []securityGroupXML{}}
	for _, g := range matched {
		out.SecurityGroupInfo = append(out.SecurityGroupInfo, securityGroupXML{
			OwnerID:             g.OwnerID,
			GroupID:             g.ID,
			GroupName:           g.Name,
			GroupDescription:    g.Description,
			IPPermissions:       permissionsXML(g.OwnerID, g.Ingress),
			IPPermissionsEgress: permissionsXML(g.OwnerID, g.Egress),
			VpcID:               g.VPCID,
			SecurityGroupArn:    g.ARN,
			TagSet:              tagsXML(g.Tags),
		})
	}
	return out, nil
}

func ruleValues(rules []Rule, f func(Rule) []string) []string {
	var out []string
	for _, r := range rules {
		out = append(out, f(r)...)
	}
	return out
}

type zoneXML struct {
	ZoneName           string     `xml:"zoneName"`
	ZoneID             string     `xml:"zoneId"`
	ZoneState          string     `xml:"zoneState"`
	OptInStatus        string     `xml:"optInStatus"`
	MessageSet         []struct{} `xml:"messageSet>item"`
	RegionName         string     `xml:"regionName"`
	GroupName          string     `xml:"groupName"`
	GroupLongName      string     `xml:"groupLongName,omitempty"`
	NetworkBorderGroup string     `xml:"networkBorderGroup"`
	ZoneType           string     `xml:"zoneType"`
}

type describeAvailabilityZonesResponse struct {
	ResponseHeader
	AvailabilityZoneInfo []zoneXML `xml:"availabilityZoneInfo>item"`
}

func (s *Service) describeAvailabilityZones(r *request) (response, error) {
	names, zoneIDs := r.list("ZoneName"), r.list("ZoneId")
	fs := r.filters()
	var zones []zoneXML
	for i, suffix := range zoneSuffixes {
		zones = append(zones, zoneXML{
			ZoneName:           r.region + suffix,
			ZoneID:             zoneID(r.region, i),
			ZoneState:          "available",
			OptInStatus:        "opt-in-not-required",
			RegionName:         r.region,
			GroupName:          r.region,
			NetworkBorderGroup: r.region,
			ZoneType:           "availability-zone",
		})
	}
	for _, n := range names {
		if !slices.ContainsFunc(zones, func(z zoneXML) bool { return z.ZoneName == n }) {
			return nil, awsapi.Errorf("InvalidParameterValue", "Invalid availability zone: [%s]", n)
		}
	}
	for _, id := range zoneIDs {
		if !slices.ContainsFunc(zones, func(z zoneXML) bool { return z.ZoneID == id }) {
			return nil, awsapi.Errorf("InvalidParameterValue", "Invalid availability zone id: [%s]", id)
		}
	}
	out := &describeAvailabilityZonesResponse{AvailabilityZoneInfo: []zoneXML{}}
	for _, z := range zones {
		if (len(names) > 0 || len(zoneIDs) > 0) && !slices.Contains(names, z.ZoneName) && !slices.Contains(zoneIDs, z.ZoneID) {
			continue
		}
		ok, err := matchAll(fs, func(name string) ([]string, bool) {
			switch name {
			case "zone-name":
				return []string{z.ZoneName}, true
			case "zone-id":
				return []string{z.ZoneID}, true
			case "state":
				return []string{z.ZoneState}, true
			case "region-name":
				return []string{z.RegionName}, true
			case "group-name":
				return []string{z.GroupName}, true
			case "opt-in-status":
				return []string{z.OptInStatus}, true
			case "zone-type":
				return []string{z.ZoneType}, true
			case "network-border-group":
				return []string{z.NetworkBorderGroup}, true
			}
			return nil, false
		})
		if err != nil {
			return nil, err
		}
		if ok {
			out.AvailabilityZoneInfo = append(out.AvailabilityZoneInfo, z)
		}
	}
	return out, nil
}

type attributeValueXML struct {
	AttributeValue string `xml:"attributeValue"`
}

type accountAttributeXML struct {
	AttributeName     string              `xml:"attributeName"`
	AttributeValueSet []attributeValueXML `xml:"attributeValueSet>item"`
}

type describeAccountAttributesResponse struct {
	ResponseHeader
	AccountAttributeSet []accountAttributeXML `xml:"accountAttributeSet>item"`
}

func (s *Service) describeAccountAttributes(r *request) (response, error) {
	var vpcID string
	err := s.Store.View(r.ctx, func(tx state.Tx) error {
		var err error
		vpcID, err = defaultVPCID(tx, r.account, r.region)
		return err
	})
	if err != nil {
		return nil, err
	}
	all := []accountAttributeXML{
		{"supported-platforms", []attributeValueXML{{"VPC"}}},
		{"default-vpc", []attributeValueXML{{vpcID}}},
		{"max-instances", []attributeValueXML{{"20"}}},
		{"vpc-max-security-groups-per-interface", []attributeValueXML{{"5"}}},
		{"max-elastic-ips", []attributeValueXML{{"5"}}},
		{"vpc-max-elastic-ips", []attributeValueXML{{"5"}}},
	}
	want := r.list("AttributeName")
	out := &describeAccountAttributesResponse{AccountAttributeSet: []accountAttributeXML{}}
	for _, w := range want {
		if !slices.ContainsFunc(all, func(a accountAttributeXML) bool { return a.AttributeName == w }) {
			return nil, awsapi.Errorf("InvalidParameterValue", "Value (%s) for parameter attributeName is invalid. Unknown attribute name.", w)
		}
	}
	for _, a := range all {
		if len(want) == 0 || slices.Contains(want, a.AttributeName) {
			out.AccountAttributeSet = append(out.AccountAttributeSet, a)
		}
	}
	return out, nil
}

// selectByID narrows items to the ids asked for (all when none are), failing
// with code for the ones that do not exist.
func selectByID[T any](items []T, id func(T) string, ids []string, code, what string) ([]T, error) {
	if len(ids) == 0 {
		return items, nil
	}
	var out []T
	var missing []string
	for _, want := range ids {
		i := slices.IndexFunc(items, func(it T) bool { return id(it) == want })
		if i < 0 {
			if !slices.Contains(missing, want) {
				missing = append(missing, want)
			}
			continue
		}
		if !slices.ContainsFunc(out, func(it T) bool { return id(it) == want }) {
			out = append(out, items[i])
		}
	}
	if len(missing) > 0 {
		return nil, notFound(code, what, missing)
	}
	slices.SortFunc(out, func(a, b T) int { return strings.Compare(id(a), id(b)) })
	return out, nil
}
