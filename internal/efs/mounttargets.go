package efs

import (
	"net/netip"
	"slices"

	"github.com/gantry-dev/gantry/internal/ec2"
	"github.com/gantry-dev/gantry/internal/state"
)

type createMountTargetIn struct {
	FileSystemId   string
	SubnetId       string
	IpAddress      string
	Ipv6Address    string
	IpAddressType  string
	SecurityGroups []string
}

func (s *Service) createMountTarget(c *call) (any, int, error) {
	var in createMountTargetIn
	if err := c.decode(&in); err != nil {
		return nil, 0, err
	}
	if err := checkFSID(in.FileSystemId); err != nil {
		return nil, 0, err
	}
	if in.SubnetId == "" {
		return nil, 0, badRequest("SubnetId is required.")
	}
	if in.IpAddressType != "" && in.IpAddressType != "IPV4_ONLY" {
		return nil, 0, badRequest("IpAddressType '%s' is not supported: subnets here are IPv4 only.", in.IpAddressType)
	}
	if in.Ipv6Address != "" {
		return nil, 0, badRequest("Ipv6Address is not supported: subnets here are IPv4 only.")
	}
	if len(in.SecurityGroups) > 5 {
		return nil, 0, errorf("SecurityGroupLimitExceeded", "A mount target can have at most 5 security groups.")
	}
	fsID := bareID(in.FileSystemId)
	var mt *MountTarget
	err := s.Store.Update(c.ctx, func(tx state.Tx) error {
		f, err := LookupFileSystem(tx, c.account, c.region, fsID)
		if err != nil {
			return err
		}
		if f == nil {
			return fsNotFound(fsID)
		}
		sn, err := ec2.LookupSubnet(tx, c.account, c.region, in.SubnetId)
		if err != nil {
			return err
		}
		if sn == nil {
			return errorf("SubnetNotFound", "The subnet ID '%s' does not exist", in.SubnetId)
		}
		if f.AZName != "" && f.AZName != sn.AvailabilityZone {
			return errorf("AvailabilityZonesMismatch", "File system '%s' is in %s; subnet '%s' is in %s.", fsID, f.AZName, sn.ID, sn.AvailabilityZone)
		}
		groups := slices.Compact(slices.Sorted(slices.Values(in.SecurityGroups)))
		for _, g := range groups {
			sg, err := ec2.LookupSecurityGroup(tx, c.account, c.region, g)
			if err != nil {
				return err
			}
			if sg == nil {
				return errorf("SecurityGroupNotFound", "The security group '%s' does not exist", g)
			}
			if sg.VPCID != sn.VPCID {
				return errorf("SecurityGroupNotFound", "The security group '%s' is not in VPC '%s'.", g, sn.VPCID)
			}
		}
		if len(groups) == 0 {
			sg, err := ec2.VPCDefaultSecurityGroup(tx, c.account, c.region, sn.VPCID)
			if err != nil {
				return err
			}
			if sg != nil {
				groups = []string{sg.ID}
			}
		}
		all, err := state.List[MountTarget](tx, KindMountTarget, scope(c.account, c.region))
		if err != nil {
			return err
		}
		used := map[netip.Addr]bool{}
		for _, o := range all {
			if a, err := netip.ParseAddr(o.IPAddress); err == nil && o.SubnetID == sn.ID {
				used[a] = true
			}
			if o.FileSystemID != fsID {
				continue
			}
			if o.VPCID != sn.VPCID {
				return errorf("MountTargetConflict", "File system '%s' has mount targets in VPC '%s'; all its mount targets must be in one VPC.", fsID, o.VPCID)
			}
			if o.AZName == sn.AvailabilityZone {
				return errorf("MountTargetConflict", "mount target already exists in this AZ")
			}
		}
		ip, err := pickAddress(sn, in.IpAddress, used)
		if err != nil {
			return err
		}
		mt = &MountTarget{
			ID: newID("fsmt-"), OwnerID: c.account, FileSystemID: fsID, SubnetID: sn.ID, VPCID: sn.VPCID,
			AZName: sn.AvailabilityZone, AZID: sn.AvailabilityZoneID, IPAddress: ip, ENIID: newID("eni-"),
			SecurityGroups: groups,
		}
		return tx.Put(KindMountTarget, scope(c.account, c.region)+mt.ID, mt)
	})
	if err != nil {
		return nil, 0, err
	}
	out := mountTargetDesc(mt)
	out["LifeCycleState"] = "creating"
	return out, 200, nil
}

// pickAddress checks a requested address, or picks one from the top of the
// subnet down (task ENIs are leased from the bottom). AWS reserves the
// first four addresses and the last.
func pickAddress(sn *ec2.Subnet, want string, used map[netip.Addr]bool) (string, error) {
	p := sn.Prefix().Masked()
	if !p.IsValid() || !p.Addr().Is4() {
		return "", errorf("NoFreeAddressesInSubnet", "Subnet '%s' has no IPv4 range.", sn.ID)
	}
	first := p.Addr().Next().Next().Next().Next()
	last := p.Addr()
	for a := p.Addr(); p.Contains(a); a = a.Next() {
		last = a
	}
	last = last.Prev() // broadcast
	if want != "" {
		a, err := netip.ParseAddr(want)
		if err != nil || !a.Is4() {
			return "", badRequest("Invalid IpAddress '%s'.", want)
		}
		if !p.Contains(a) || a.Less(first) || last.Less(a) {
			return "", badRequest("IpAddress '%s' is not a usable address of subnet '%s' (%s).", want, sn.ID, sn.CIDR)
		}
		if used[a] {
			return "", errorf("IpAddressInUse", "IpAddress '%s' is already in use.", want)
		}
		return a.String(), nil
	}
	for a := last; !a.Less(first); a = a.Prev() {
		if !used[a] {
			return a.String(), nil
		}
	}
	return "", errorf("NoFreeAddressesInSubnet", "Subnet '%s' has no free address.", sn.ID)
}

func mountTargetDesc(mt *MountTarget) map[string]any {
	return map[string]any{
		"OwnerId":              mt.OwnerID,
		"MountTargetId":        mt.ID,
		"FileSystemId":         mt.FileSystemID,
		"SubnetId":             mt.SubnetID,
		"LifeCycleState":       "available",
		"IpAddress":            mt.IPAddress,
		"NetworkInterfaceId":   mt.ENIID,
		"AvailabilityZoneId":   mt.AZID,
		"AvailabilityZoneName": mt.AZName,
		"VpcId":                mt.VPCID,
	}
}

func (s *Service) describeMountTargets(c *call) (any, int, error) {
	limit, marker, err := pageArgs(c, "MaxItems", "Marker")
	if err != nil {
		return nil, 0, err
	}
	fsID, mtID, apID := c.query.Get("FileSystemId"), c.query.Get("MountTargetId"), c.query.Get("AccessPointId")
	n := 0
	for _, v := range []string{fsID, mtID, apID} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return nil, 0, badRequest("Specify exactly one of FileSystemId, MountTargetId or AccessPointId.")
	}
	switch {
	case fsID != "":
		if err := checkFSID(fsID); err != nil {
			return nil, 0, err
		}
	case mtID != "" && !reMTID.MatchString(mtID):
		return nil, 0, badRequest("Invalid mount target id '%s'.", mtID)
	case apID != "" && !reAPID.MatchString(apID):
		return nil, 0, badRequest("Invalid access point id '%s'.", apID)
	}
	var list []MountTarget
	err = s.Store.View(c.ctx, func(tx state.Tx) error {
		list = nil
		switch {
		case mtID != "":
			var mt MountTarget
			ok, err := tx.Get(KindMountTarget, scope(c.account, c.region)+mtID, &mt)
			if err != nil {
				return err
			}
			if !ok {
				return errorf("MountTargetNotFound", "Mount target '%s' does not exist.", mtID)
			}
			list = []MountTarget{mt}
			return nil
		case apID != "":
			ap, err := LookupAccessPoint(tx, c.account, c.region, apID)
			if err != nil {
				return err
			}
			if ap == nil {
				return errorf("AccessPointNotFound", "Access point '%s' does not exist.", bareID(apID))
			}
			fsID = ap.FileSystemID
		}
		f, err := LookupFileSystem(tx, c.account, c.region, fsID)
		if err != nil {
			return err
		}
		if f == nil {
			return fsNotFound(bareID(fsID))
		}
		list, err = MountTargets(tx, c.account, c.region, f.ID)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	pg, next, err := page(list, func(m MountTarget) string { return m.ID }, marker, limit)
	if err != nil {
		return nil, 0, err
	}
	descs := []any{}
	for i := range pg {
		descs = append(descs, mountTargetDesc(&pg[i]))
	}
	out := map[string]any{"MountTargets": descs}
	if marker != "" {
		out["Marker"] = marker
	}
	if next != "" {
		out["NextMarker"] = next
	}
	return out, 200, nil
}

func (s *Service) lookupMountTarget(c *call) (*MountTarget, error) {
	id := c.params[0]
	if !reMTID.MatchString(id) {
		return nil, badRequest("Invalid mount target id '%s'.", id)
	}
	var mt MountTarget
	var ok bool
	err := s.Store.View(c.ctx, func(tx state.Tx) (err error) {
		ok, err = tx.Get(KindMountTarget, scope(c.account, c.region)+id, &mt)
		return err
	})
	if err == nil && !ok {
		err = errorf("MountTargetNotFound", "Mount target '%s' does not exist.", id)
	}
	return &mt, err
}

func (s *Service) describeMountTargetSecurityGroups(c *call) (any, int, error) {
	mt, err := s.lookupMountTarget(c)
	if err != nil {
		return nil, 0, err
	}
	groups := mt.SecurityGroups
	if groups == nil {
		groups = []string{}
	}
	return map[string]any{"SecurityGroups": groups}, 200, nil
}

func (s *Service) deleteMountTarget(c *call) (any, int, error) {
	id := c.params[0]
	if !reMTID.MatchString(id) {
		return nil, 0, badRequest("Invalid mount target id '%s'.", id)
	}
	err := s.Store.Update(c.ctx, func(tx state.Tx) error {
		ok, err := tx.Delete(KindMountTarget, scope(c.account, c.region)+id)
		if err == nil && !ok {
			err = errorf("MountTargetNotFound", "Mount target '%s' does not exist.", id)
		}
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	return nil, 204, nil
}
