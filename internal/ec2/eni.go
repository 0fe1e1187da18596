package ec2

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/model"
	"github.com/gantry-dev/gantry/internal/state"
)

// eni is a task's network interface, as the task record describes it. EC2
// keeps no ENI documents of its own: a Fargate ENI lives exactly as long as
// its task, so the task record is the one source.
type eni struct {
	id, mac, privateIP, privateDNS, publicIP string
	subnetID, vpcID, zone                    string
	groups                                   []string
	attachmentID, taskARN                    string
	attached                                 bool
	attachTime                               time.Time
}

// taskENIs returns the ENIs of the scope's tasks that still hold one (every
// task not yet STOPPED).
func taskENIs(tx state.Tx, account, region string) ([]eni, error) {
	tasks, err := state.List[model.TaskRecord](tx, model.KindTask, scopePrefix(account, region))
	if err != nil {
		return nil, err
	}
	var out []eni
	for _, rec := range tasks {
		t := &rec.Task
		if ecstypes.Deref(t.LastStatus) == "STOPPED" {
			continue
		}
		for _, a := range t.Attachments {
			if a == nil || ecstypes.Deref(a.Type_) != "ElasticNetworkInterface" || ecstypes.Deref(a.Status) == "DELETED" {
				continue
			}
			d := map[string]string{}
			for _, kv := range a.Details {
				if kv != nil {
					d[ecstypes.Deref(kv.Name)] = ecstypes.Deref(kv.Value)
				}
			}
			e := eni{
				id:           d["networkInterfaceId"],
				mac:          d["macAddress"],
				privateIP:    d["privateIPv4Address"],
				privateDNS:   d["privateDnsName"],
				publicIP:     d["publicIPv4Address"],
				subnetID:     d["subnetId"],
				zone:         ecstypes.Deref(t.AvailabilityZone),
				attachmentID: ecstypes.Deref(a.Id),
				taskARN:      ecstypes.Deref(t.TaskArn),
				attached:     ecstypes.Deref(a.Status) == "ATTACHED",
			}
			if t.CreatedAt != nil {
				e.attachTime = t.CreatedAt.Time
			}
			if rec.Spec != nil {
				e.vpcID = rec.Spec.Network.VPCID
				e.groups = rec.Spec.Network.SecurityGroupIDs
				if rec.Spec.Network.PublicIPv4 != "" {
					e.publicIP = rec.Spec.Network.PublicIPv4
				}
			}
			if e.id != "" {
				out = append(out, e)
			}
		}
	}
	return out, nil
}

type groupIdentifierXML struct {
	GroupID   string `xml:"groupId"`
	GroupName string `xml:"groupName"`
}

type eniAttachmentXML struct {
	AttachTime          string `xml:"attachTime"`
	AttachmentID        string `xml:"attachmentId"`
	DeleteOnTermination bool   `xml:"deleteOnTermination"`
	DeviceIndex         int    `xml:"deviceIndex"`
	NetworkCardIndex    int    `xml:"networkCardIndex"`
	InstanceOwnerID     string `xml:"instanceOwnerId"`
	Status              string `xml:"status"`
}

type eniAssociationXML struct {
	IPOwnerID     string `xml:"ipOwnerId"`
	PublicDNSName string `xml:"publicDnsName"`
	PublicIP      string `xml:"publicIp"`
}

type eniPrivateIPXML struct {
	Association      *eniAssociationXML `xml:"association,omitempty"`
	Primary          bool               `xml:"primary"`
	PrivateDNSName   string             `xml:"privateDnsName"`
	PrivateIPAddress string             `xml:"privateIpAddress"`
}

type networkInterfaceXML struct {
	Association        *eniAssociationXML   `xml:"association,omitempty"`
	Attachment         eniAttachmentXML     `xml:"attachment"`
	AvailabilityZone   string               `xml:"availabilityZone"`
	AvailabilityZoneID string               `xml:"availabilityZoneId"`
	Description        string               `xml:"description"`
	Groups             []groupIdentifierXML `xml:"groupSet>item"`
	InterfaceType      string               `xml:"interfaceType"`
	Ipv6Addresses      []struct{}           `xml:"ipv6AddressesSet>item"`
	MacAddress         string               `xml:"macAddress"`
	NetworkInterfaceID string               `xml:"networkInterfaceId"`
	OwnerID            string               `xml:"ownerId"`
	PrivateDNSName     string               `xml:"privateDnsName,omitempty"`
	PrivateIPAddress   string               `xml:"privateIpAddress,omitempty"`
	PrivateIPAddresses []eniPrivateIPXML    `xml:"privateIpAddressesSet>item"`
	RequesterID        string               `xml:"requesterId"`
	RequesterManaged   bool                 `xml:"requesterManaged"`
	SourceDestCheck    bool                 `xml:"sourceDestCheck"`
	Status             string               `xml:"status"`
	SubnetID           string               `xml:"subnetId"`
	TagSet             []tagXML             `xml:"tagSet>item"`
	VpcID              string               `xml:"vpcId"`
}

type describeNetworkInterfacesResponse struct {
	ResponseHeader
	NetworkInterfaces []networkInterfaceXML `xml:"networkInterfaceSet>item"`
	NextToken         string                `xml:"nextToken,omitempty"`
}

// ecsRequester is who EC2 names as the requester of the ENIs ECS manages.
const ecsRequester = "amazon-ecs"

func (s *Service) describeNetworkInterfaces(r *request) (response, error) {
	ids := r.list("NetworkInterfaceId")
	fs := r.filters()
	p, err := r.paging("networkInterfaceIds", len(ids) > 0)
	if err != nil {
		return nil, err
	}
	if err := checkIDs("InvalidNetworkInterfaceID.Malformed", "eni", ids); err != nil {
		return nil, err
	}
	var enis []eni
	groupNames := map[string]string{}
	subnets := map[string]Subnet{}
	err = s.Store.View(r.ctx, func(tx state.Tx) error {
		if enis, err = taskENIs(tx, r.account, r.region); err != nil {
			return err
		}
		groups, err := SecurityGroups(tx, r.account, r.region)
		for _, g := range groups {
			groupNames[g.ID] = g.Name
		}
		if err != nil {
			return err
		}
		all, err := Subnets(tx, r.account, r.region, "")
		for _, sn := range all {
			subnets[sn.ID] = sn
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(enis, func(a, b eni) int { return strings.Compare(a.id, b.id) })
	enis, err = selectByID(enis, func(e eni) string { return e.id }, ids, "InvalidNetworkInterfaceID.NotFound", "networkInterface ID")
	if err != nil {
		return nil, err
	}
	out := &describeNetworkInterfacesResponse{NetworkInterfaces: []networkInterfaceXML{}}
	var matched []networkInterfaceXML
	for _, e := range enis {
		x := eniXML(r, e, groupNames, subnets)
		ok, err := matchAll(fs, func(name string) ([]string, bool) {
			switch name {
			case "network-interface-id":
				return []string{x.NetworkInterfaceID}, true
			case "subnet-id":
				return []string{x.SubnetID}, true
			case "vpc-id":
				return []string{x.VpcID}, true
			case "availability-zone":
				return []string{x.AvailabilityZone}, true
			case "private-ip-address", "addresses.private-ip-address", "private-dns-name":
				if name == "private-dns-name" {
					return []string{x.PrivateDNSName}, true
				}
				return []string{x.PrivateIPAddress}, true
			case "association.public-ip":
				return []string{e.publicIP}, true
			case "mac-address":
				return []string{x.MacAddress}, true
			case "status":
				return []string{x.Status}, true
			case "description":
				return []string{x.Description}, true
			case "group-id":
				return e.groups, true
			case "group-name":
				var names []string
				for _, g := range x.Groups {
					names = append(names, g.GroupName)
				}
				return names, true
			case "interface-type":
				return []string{x.InterfaceType}, true
			case "requester-id":
				return []string{x.RequesterID}, true
			case "requester-managed":
				return []string{boolString(x.RequesterManaged)}, true
			case "owner-id":
				return []string{x.OwnerID}, true
			case "source-dest-check":
				return []string{boolString(x.SourceDestCheck)}, true
			case "attachment.status":
				return []string{x.Attachment.Status}, true
			case "attachment.attachment-id":
				return []string{x.Attachment.AttachmentID}, true
			case "attachment.instance-owner-id":
				return []string{x.Attachment.InstanceOwnerID}, true
			}
			return tagAttrs(nil, name)
		})
		if err != nil {
			return nil, err
		}
		if ok {
			matched = append(matched, x)
		}
	}
	matched, out.NextToken = page(matched, func(x networkInterfaceXML) string { return x.NetworkInterfaceID }, p)
	out.NetworkInterfaces = append(out.NetworkInterfaces, matched...)
	return out, nil
}

// eniXML shows a task's ENI as Fargate's look in EC2: requester-managed by
// ECS, described by the ECS attachment's ARN, attached at device index 1.
func eniXML(r *request, e eni, groupNames map[string]string, subnets map[string]Subnet) networkInterfaceXML {
	x := networkInterfaceXML{
		Attachment: eniAttachmentXML{
			AttachTime:       e.attachTime.UTC().Format("2006-01-02T15:04:05.000Z"),
			AttachmentID:     "ela-attach-" + strings.TrimPrefix(e.id, "eni-"),
			DeviceIndex:      1,
			InstanceOwnerID:  "amazon-aws",
			NetworkCardIndex: 0,
			Status:           "attaching",
		},
		AvailabilityZone:   e.zone,
		Description:        fmt.Sprintf("arn:aws:ecs:%s:%s:attachment/%s", r.region, r.account, e.attachmentID),
		Groups:             []groupIdentifierXML{},
		InterfaceType:      "interface",
		MacAddress:         e.mac,
		NetworkInterfaceID: e.id,
		OwnerID:            r.account,
		PrivateDNSName:     e.privateDNS,
		PrivateIPAddress:   e.privateIP,
		PrivateIPAddresses: []eniPrivateIPXML{},
		RequesterID:        ecsRequester,
		RequesterManaged:   true,
		SourceDestCheck:    true,
		Status:             "attaching",
		SubnetID:           e.subnetID,
		TagSet:             []tagXML{},
		VpcID:              e.vpcID,
	}
	if sn, ok := subnets[e.subnetID]; ok {
		x.AvailabilityZoneID = sn.AvailabilityZoneID
		if x.VpcID == "" {
			x.VpcID = sn.VPCID
		}
	}
	if e.attached {
		x.Status, x.Attachment.Status = "in-use", "attached"
	}
	for _, g := range e.groups {
		x.Groups = append(x.Groups, groupIdentifierXML{GroupID: g, GroupName: groupNames[g]})
	}
	if e.publicIP != "" {
		x.Association = &eniAssociationXML{IPOwnerID: "amazon", PublicIP: e.publicIP}
	}
	if e.privateIP != "" {
		x.PrivateIPAddresses = []eniPrivateIPXML{{Association: x.Association, Primary: true, PrivateDNSName: e.privateDNS, PrivateIPAddress: e.privateIP}}
	}
	return x
}

// groupInUse reports whether a task that is not yet stopped has group id on
// its ENI.
func groupInUse(tx state.Tx, account, region, id string) (bool, error) {
	enis, err := taskENIs(tx, account, region)
	for _, e := range enis {
		for _, g := range e.groups {
			if g == id {
				return true, err
			}
		}
	}
	return false, err
}
