package ec2

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/state"
)

// emptyResponse is the output of actions whose result has no members.
type emptyResponse struct {
	ResponseHeader
	Return bool `xml:"return"`
}

type createVpcResponse struct {
	ResponseHeader
	Vpc vpcXML `xml:"vpc"`
}

// parseCIDR reads an IPv4 network in canonical form, with EC2's error for
// anything else.
func parseCIDR(v string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(v)
	if err != nil || !p.Addr().Is4() || p.Masked() != p {
		return p, awsapi.Errorf("InvalidParameterValue", "Value (%s) for parameter cidrBlock is invalid. This is not a valid CIDR block.", v)
	}
	return p, nil
}

func (s *Service) createVpc(r *request) (response, error) {
	cidr, err := r.required("CidrBlock")
	if err != nil {
		return nil, err
	}
	p, err := parseCIDR(cidr)
	if err != nil {
		return nil, err
	}
	// AWS allows VPCs from /16 (65,536 addresses) to /28 (16).
	if p.Bits() < 16 || p.Bits() > 28 {
		return nil, awsapi.Errorf("InvalidVpc.Range", "The CIDR '%s' is invalid.", cidr)
	}
	if t := r.param("InstanceTenancy"); t != "" && t != "default" {
		return nil, awsapi.Errorf("InvalidParameterValue", "Value (%s) for parameter instanceTenancy is invalid. Fargate supports only 'default'.", t)
	}
	tags, err := r.tagSpecifications("vpc")
	if err != nil {
		return nil, err
	}
	vpc := VPC{
		ID:                newID("vpc"),
		OwnerID:           r.account,
		CIDR:              p.String(),
		CIDRAssociationID: newID("vpc-cidr-assoc"),
		DHCPOptionsID:     newID("dopt"),
		Tags:              tags,
	}
	err = s.Store.Update(r.ctx, func(tx state.Tx) error {
		if err := tx.Put(kindVPC, scopePrefix(r.account, r.region)+vpc.ID, vpc); err != nil {
			return err
		}
		return putDefaultGroup(tx, r.account, r.region, vpc.ID)
	})
	if err != nil {
		return nil, err
	}
	s.changed(ChangeVPC)
	s.changed(ChangeSecurityGroup)
	out := &createVpcResponse{Vpc: vpc.xml()}
	// A new VPC is "pending" in CreateVpc's answer, as EC2 reports it;
	// DescribeVpcs shows it available.
	out.Vpc.State = "pending"
	return out, nil
}

func (s *Service) deleteVpc(r *request) (response, error) {
	id, err := r.required("VpcId")
	if err != nil {
		return nil, err
	}
	if err := checkIDs("InvalidVpcID.Malformed", "vpc", []string{id}); err != nil {
		return nil, err
	}
	var groups []string
	err = s.Store.Update(r.ctx, func(tx state.Tx) error {
		groups = nil
		vpc, err := LookupVPC(tx, r.account, r.region, id)
		if err != nil {
			return err
		}
		if vpc == nil {
			return notFound("InvalidVpcID.NotFound", "vpc ID", []string{id})
		}
		subnets, err := Subnets(tx, r.account, r.region, id)
		if err != nil {
			return err
		}
		sgs, err := SecurityGroupsOfVPC(tx, r.account, r.region, id)
		if err != nil {
			return err
		}
		// The default group goes with its VPC; any other group or subnet
		// keeps it, as in EC2.
		if len(subnets) > 0 || slices.ContainsFunc(sgs, func(g SecurityGroup) bool { return g.Name != "default" }) {
			return awsapi.Errorf("DependencyViolation", "The vpc '%s' has dependencies and cannot be deleted.", id)
		}
		prefix := scopePrefix(r.account, r.region)
		for _, g := range sgs {
			if _, err := tx.Delete(kindSecurityGroup, prefix+g.ID); err != nil {
				return err
			}
			groups = append(groups, g.ID)
		}
		if vpc.IsDefault {
			// Gone for good: the next start must not make a new one, as
			// AWS only does on CreateDefaultVpc.
			if err := tx.Put(kindDefaultVPC, prefix, noDefaultVPC); err != nil {
				return err
			}
		}
		_, err = tx.Delete(kindVPC, prefix+id)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.changed(ChangeVPC)
	if len(groups) > 0 {
		s.changed(ChangeSecurityGroup)
	}
	return &emptyResponse{Return: true}, nil
}

type createSubnetResponse struct {
	ResponseHeader
	Subnet subnetXML `xml:"subnet"`
}

func (s *Service) createSubnet(r *request) (response, error) {
	vpcID, err := r.required("VpcId")
	if err != nil {
		return nil, err
	}
	cidr, err := r.required("CidrBlock")
	if err != nil {
		return nil, err
	}
	if err := checkIDs("InvalidVpcID.Malformed", "vpc", []string{vpcID}); err != nil {
		return nil, err
	}
	p, err := parseCIDR(cidr)
	if err != nil {
		return nil, err
	}
	zone, zoneIdx, err := r.subnetZone()
	if err != nil {
		return nil, err
	}
	tags, err := r.tagSpecifications("subnet")
	if err != nil {
		return nil, err
	}
	id := newID("subnet")
	sn := Subnet{
		ID:                 id,
		ARN:                fmt.Sprintf("arn:aws:ec2:%s:%s:subnet/%s", r.region, r.account, id),
		VPCID:              vpcID,
		OwnerID:            r.account,
		CIDR:               p.String(),
		AvailabilityZone:   zone,
		AvailabilityZoneID: zoneID(r.region, zoneIdx),
		Gateway:            p.Addr().Next().String(),
		Tags:               tags,
	}
	err = s.Store.Update(r.ctx, func(tx state.Tx) error {
		vpc, err := LookupVPC(tx, r.account, r.region, vpcID)
		if err != nil {
			return err
		}
		if vpc == nil {
			return notFound("InvalidVpcID.NotFound", "vpc ID", []string{vpcID})
		}
		vr, _ := netip.ParsePrefix(vpc.CIDR)
		if p.Bits() < 16 || p.Bits() > 28 || !vr.Contains(p.Addr()) || p.Bits() < vr.Bits() {
			return awsapi.Errorf("InvalidSubnet.Range", "The CIDR '%s' is invalid.", cidr)
		}
		others, err := Subnets(tx, r.account, r.region, vpcID)
		if err != nil {
			return err
		}
		for _, o := range others {
			if o.Prefix().Overlaps(p) {
				return awsapi.Errorf("InvalidSubnet.Conflict", "The CIDR '%s' conflicts with another subnet", cidr)
			}
		}
		return tx.Put(kindSubnet, scopePrefix(r.account, r.region)+sn.ID, sn)
	})
	if err != nil {
		return nil, err
	}
	s.changed(ChangeSubnet)
	return &createSubnetResponse{Subnet: sn.xml()}, nil
}

// subnetZone resolves AvailabilityZone or AvailabilityZoneId; without
// either, the region's first zone.
func (r *request) subnetZone() (string, int, error) {
	name, id := r.param("AvailabilityZone"), r.param("AvailabilityZoneId")
	var names []string
	for i, suffix := range zoneSuffixes {
		z := r.region + suffix
		names = append(names, z)
		if (name == "" && id == "") || name == z || (name == "" && id == zoneID(r.region, i)) {
			return z, i, nil
		}
	}
	if name == "" {
		return "", 0, awsapi.Errorf("InvalidParameterValue", "Value (%s) for parameter availabilityZoneId is invalid. Subnets can currently only be created in the following availability zone ids: %s.", id, zoneIDList(r.region))
	}
	return "", 0, awsapi.Errorf("InvalidParameterValue", "Value (%s) for parameter availabilityZone is invalid. Subnets can currently only be created in the following availability zones: %s.", name, strings.Join(names, ", "))
}

func zoneIDList(region string) string {
	var ids []string
	for i := range zoneSuffixes {
		ids = append(ids, zoneID(region, i))
	}
	return strings.Join(ids, ", ")
}

func (s *Service) deleteSubnet(r *request) (response, error) {
	id, err := r.required("SubnetId")
	if err != nil {
		return nil, err
	}
	if err := checkIDs("InvalidSubnetID.Malformed", "subnet", []string{id}); err != nil {
		return nil, err
	}
	err = s.Store.Update(r.ctx, func(tx state.Tx) error {
		sn, err := LookupSubnet(tx, r.account, r.region, id)
		if err != nil {
			return err
		}
		if sn == nil {
			return notFound("InvalidSubnetID.NotFound", "subnet ID", []string{id})
		}
		enis, err := taskENIs(tx, r.account, r.region)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(enis, func(e eni) bool { return e.subnetID == id }) {
			return awsapi.Errorf("DependencyViolation", "The subnet '%s' has dependencies and cannot be deleted.", id)
		}
		_, err = tx.Delete(kindSubnet, scopePrefix(r.account, r.region)+id)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.changed(ChangeSubnet)
	return &emptyResponse{Return: true}, nil
}
