package ec2

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/state"
)

// maxRules is EC2's default quota of inbound (and, separately, outbound)
// rules per security group.
const maxRules = 60

type createSecurityGroupResponse struct {
	ResponseHeader
	GroupID          string   `xml:"groupId"`
	Tags             []tagXML `xml:"tagSet>item,omitempty"`
	SecurityGroupArn string   `xml:"securityGroupArn"`
}

func (s *Service) createSecurityGroup(r *request) (response, error) {
	name, err := r.required("GroupName")
	if err != nil {
		return nil, err
	}
	desc, err := r.required("GroupDescription")
	if err != nil {
		return nil, err
	}
	switch {
	case len(name) > 255:
		return nil, awsapi.Errorf("InvalidParameterValue", "Value (%s) for parameter GroupName is invalid. Group names may not be longer than 255 characters.", name)
	case strings.HasPrefix(name, "sg-"):
		return nil, awsapi.Errorf("InvalidParameterValue", "Value (%s) for parameter GroupName is invalid. Group names may not be in the format sg-*.", name)
	case name == "default":
		return nil, awsapi.Errorf("InvalidGroup.Reserved", "The security group 'default' is reserved")
	case len(desc) > 255:
		return nil, awsapi.Errorf("InvalidParameterValue", "Value (%s) for parameter GroupDescription is invalid. Group descriptions may not be longer than 255 characters.", desc)
	}
	vpcID := r.param("VpcId")
	if vpcID != "" {
		if err := checkIDs("InvalidVpcID.Malformed", "vpc", []string{vpcID}); err != nil {
			return nil, err
		}
	}
	tags, err := r.tagSpecifications("security-group")
	if err != nil {
		return nil, err
	}
	id := newID("sg")
	g := SecurityGroup{
		ID:          id,
		ARN:         groupARN(r.account, r.region, id),
		Name:        name,
		Description: desc,
		OwnerID:     r.account,
		Egress:      []Rule{{ID: newID("sgr"), Protocol: "-1", CIDRs: []string{"0.0.0.0/0"}}},
		Tags:        tags,
	}
	err = s.Store.Update(r.ctx, func(tx state.Tx) error {
		g.VPCID = vpcID
		if g.VPCID == "" {
			def, err := defaultVPCID(tx, r.account, r.region)
			if err != nil {
				return err
			}
			if def == "" {
				return awsapi.Errorf("VPCIdNotSpecified", "No default VPC for this user")
			}
			g.VPCID = def
		} else if v, err := LookupVPC(tx, r.account, r.region, vpcID); err != nil || v == nil {
			return orNotFound(err, "InvalidVpcID.NotFound", "vpc ID", vpcID)
		}
		dup, err := groupByName(tx, r.account, r.region, g.VPCID, name)
		if err != nil {
			return err
		}
		if dup != nil {
			return awsapi.Errorf("InvalidGroup.Duplicate", "The security group '%s' already exists for VPC '%s'", name, g.VPCID)
		}
		return tx.Put(kindSecurityGroup, scopePrefix(r.account, r.region)+id, g)
	})
	if err != nil {
		return nil, err
	}
	s.changed(ChangeSecurityGroup)
	return &createSecurityGroupResponse{GroupID: id, Tags: tagsXML(tags), SecurityGroupArn: g.ARN}, nil
}

// targetGroup finds the group an action names by GroupId or, in the
// default VPC, by GroupName.
func (r *request) targetGroup(tx state.Tx) (*SecurityGroup, error) {
	id, name := r.param("GroupId"), r.param("GroupName")
	switch {
	case id != "":
		if !strings.HasPrefix(id, "sg-") {
			return nil, awsapi.Errorf("InvalidGroupId.Malformed", "Invalid id: \"%s\" (expecting \"sg-...\")", id)
		}
		g, err := LookupSecurityGroup(tx, r.account, r.region, id)
		if err != nil || g == nil {
			return nil, orNotFound(err, "InvalidGroup.NotFound", "security group", id)
		}
		return g, nil
	case name != "":
		vpc, err := defaultVPCID(tx, r.account, r.region)
		if err != nil {
			return nil, err
		}
		g, err := groupByName(tx, r.account, r.region, vpc, name)
		if err != nil {
			return nil, err
		}
		if g == nil {
			return nil, awsapi.Errorf("InvalidGroup.NotFound", "The security group '%s' does not exist in default VPC '%s'", name, vpc)
		}
		return g, nil
	}
	return nil, awsapi.Errorf("MissingParameter", "The request must contain the parameter groupName or groupId")
}

type deleteSecurityGroupResponse struct {
	ResponseHeader
	Return  bool   `xml:"return"`
	GroupID string `xml:"groupId"`
}

func (s *Service) deleteSecurityGroup(r *request) (response, error) {
	var id string
	err := s.Store.Update(r.ctx, func(tx state.Tx) error {
		g, err := r.targetGroup(tx)
		if err != nil {
			return err
		}
		id = g.ID
		if g.Name == "default" {
			return awsapi.Errorf("CannotDelete", "the specified group: \"%s\" name: \"default\" cannot be deleted by a user", g.ID)
		}
		inUse, err := groupInUse(tx, r.account, r.region, g.ID)
		if err != nil {
			return err
		}
		// Another group's rule naming this one as its source or
		// destination holds it too.
		groups, err := SecurityGroups(tx, r.account, r.region)
		if err != nil {
			return err
		}
		for _, o := range groups {
			if o.ID != g.ID && slices.ContainsFunc(slices.Concat(o.Ingress, o.Egress), func(x Rule) bool { return slices.Contains(x.GroupIDs, g.ID) }) {
				inUse = true
			}
		}
		if inUse {
			return awsapi.Errorf("DependencyViolation", "resource %s has a dependent object", g.ID)
		}
		_, err = tx.Delete(kindSecurityGroup, scopePrefix(r.account, r.region)+g.ID)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.changed(ChangeSecurityGroup)
	return &deleteSecurityGroupResponse{Return: true, GroupID: id}, nil
}

// normProtocol spells a protocol as EC2 stores it: tcp, udp and icmp by
// name (also when given by number), -1 for all, other protocols by number.
func normProtocol(p string) (string, error) {
	switch strings.ToLower(p) {
	case "tcp", "6":
		return "tcp", nil
	case "udp", "17":
		return "udp", nil
	case "icmp", "1":
		return "icmp", nil
	case "-1", "all":
		return "-1", nil
	case "icmpv6", "58":
		return "", awsapi.Errorf("InvalidParameterValue", "Invalid value '%s' for IP protocol. Gantry's VPCs are IPv4 only.", p)
	case "":
		return "", awsapi.Errorf("MissingParameter", "The request must contain the parameter ipProtocol")
	}
	if n, err := strconv.Atoi(p); err == nil && n >= 0 && n <= 255 {
		return strconv.Itoa(n), nil
	}
	return "", awsapi.Errorf("InvalidParameterValue", "Invalid value '%s' for IP protocol. Unknown protocol.", p)
}

// normPorts checks and normalizes a rule's ports for its protocol.
func normPorts(proto string, from, to *int32) (*int32, *int32, error) {
	i32 := func(n int32) *int32 { return &n }
	switch proto {
	case "tcp", "udp":
		if from == nil || to == nil {
			return nil, nil, awsapi.Errorf("InvalidParameterValue", "Invalid value 'Must specify both from and to ports with TCP/UDP.' for portRange")
		}
		// -1 is the CLI's "--port all": every port.
		if *from == -1 && *to == -1 {
			return i32(0), i32(65535), nil
		}
		if *from < 0 || *from > 65535 || *to < 0 || *to > 65535 {
			return nil, nil, awsapi.Errorf("InvalidParameterValue", "Invalid value '%d-%d' for portRange. Ports must be between 0 and 65535.", *from, *to)
		}
		if *from > *to {
			return nil, nil, awsapi.Errorf("InvalidParameterValue", "Invalid value '%d-%d' for portRange. The from port must not be greater than the to port.", *from, *to)
		}
		return from, to, nil
	case "icmp":
		// FromPort is the ICMP type, ToPort the code; -1 is any.
		t, c := int32(-1), int32(-1)
		if from != nil {
			t = *from
		}
		if to != nil {
			c = *to
		}
		if t < -1 || t > 255 || c < -1 || c > 255 || (t == -1 && c != -1) {
			return nil, nil, awsapi.Errorf("InvalidParameterValue", "Invalid value '%d,%d' for ICMP type and code. Type and code are -1 (any) or 0 to 255, and a code needs a type.", t, c)
		}
		return i32(t), i32(c), nil
	}
	// All traffic, or a protocol without ports: ports do not apply.
	return nil, nil, nil
}

// ruleSpec is one rule as a request states it: a source group may still
// be a name to resolve.
type ruleSpec struct {
	Rule
	groupName string
}

// ruleSpecs reads the IpPermissions.N of an authorize or revoke action (or
// the older top-level IpProtocol/FromPort/ToPort/CidrIp form), one spec per
// source.
func (r *request) ruleSpecs() ([]ruleSpec, error) {
	var out []ruleSpec
	perms := r.indexes("IpPermissions")
	top := r.has("IpProtocol") || r.has("CidrIp") || r.has("SourceSecurityGroupName") || r.has("FromPort")
	if len(perms) > 0 && top {
		return nil, awsapi.Errorf("InvalidParameterCombination", "The parameter 'ipPermissions' may not be used in combination with 'ipProtocol', 'fromPort', 'toPort', 'cidrIp' or 'sourceSecurityGroupName'")
	}
	if top {
		proto := r.param("IpProtocol")
		if proto == "" && r.has("SourceSecurityGroupName") {
			proto = "-1"
		}
		base, err := r.permission("", proto)
		if err != nil {
			return nil, err
		}
		if c := r.param("CidrIp"); c != "" {
			sp, err := withCIDR(base, c, "")
			if err != nil {
				return nil, err
			}
			out = append(out, sp)
		}
		if n := r.param("SourceSecurityGroupName"); n != "" {
			out = append(out, ruleSpec{Rule: base, groupName: n})
		}
		if len(out) == 0 {
			return nil, awsapi.Errorf("MissingParameter", "The request must contain the parameter cidrIp or sourceSecurityGroupName")
		}
		return out, nil
	}
	for _, i := range perms {
		k := fmt.Sprintf("IpPermissions.%d.", i)
		base, err := r.permission(k, r.param(k+"IpProtocol"))
		if err != nil {
			return nil, err
		}
		if len(r.indexes(k+"Ipv6Ranges")) > 0 {
			return nil, awsapi.Errorf("InvalidParameterValue", "IPv6 ranges are not supported: Gantry's VPCs are IPv4 only")
		}
		if len(r.indexes(k+"PrefixListIds")) > 0 {
			return nil, awsapi.Errorf("InvalidParameterValue", "Prefix lists are not supported")
		}
		n := len(out)
		for _, j := range r.indexes(k + "IpRanges") {
			rk := fmt.Sprintf("%sIpRanges.%d.", k, j)
			sp, err := withCIDR(base, r.param(rk+"CidrIp"), r.param(rk+"Description"))
			if err != nil {
				return nil, err
			}
			out = append(out, sp)
		}
		for _, j := range r.indexes(k + "Groups") {
			gk := fmt.Sprintf("%sGroups.%d.", k, j)
			sp := ruleSpec{Rule: base, groupName: r.param(gk + "GroupName")}
			sp.Description = r.param(gk + "Description")
			if id := r.param(gk + "GroupId"); id != "" {
				sp.GroupIDs, sp.groupName = []string{id}, ""
			} else if sp.groupName == "" {
				return nil, awsapi.Errorf("MissingParameter", "The request must contain the parameter groupId or groupName in UserIdGroupPairs")
			}
			out = append(out, sp)
		}
		if len(out) == n {
			return nil, awsapi.Errorf("MissingParameter", "The request must contain the parameter ipRanges or groups (the rule's source) in ipPermissions")
		}
	}
	if len(out) == 0 {
		return nil, awsapi.Errorf("MissingParameter", "The request must contain the parameter ipPermissions")
	}
	return out, nil
}

// permission reads a rule's protocol and ports under key prefix k.
func (r *request) permission(k, proto string) (Rule, error) {
	p, err := normProtocol(proto)
	if err != nil {
		return Rule{}, err
	}
	from, err := r.intParam(k + "FromPort")
	if err != nil {
		return Rule{}, err
	}
	to, err := r.intParam(k + "ToPort")
	if err != nil {
		return Rule{}, err
	}
	from, to, err = normPorts(p, from, to)
	return Rule{Protocol: p, FromPort: from, ToPort: to}, err
}

func withCIDR(base Rule, cidr, desc string) (ruleSpec, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil || !p.Addr().Is4() {
		return ruleSpec{}, awsapi.Errorf("InvalidParameterValue", "CIDR block %s is malformed", cidr)
	}
	base.CIDRs, base.Description = []string{p.Masked().String()}, desc
	return ruleSpec{Rule: base}, nil
}

// resolve turns specs into rules of g, checking their source groups exist
// in g's VPC.
func resolve(tx state.Tx, r *request, g *SecurityGroup, specs []ruleSpec) ([]Rule, error) {
	out := make([]Rule, 0, len(specs))
	for _, sp := range specs {
		rule := sp.Rule
		if sp.groupName != "" {
			src, err := groupByName(tx, r.account, r.region, g.VPCID, sp.groupName)
			if err != nil {
				return nil, err
			}
			if src == nil {
				return nil, awsapi.Errorf("InvalidGroup.NotFound", "The security group '%s' does not exist in VPC '%s'", sp.groupName, g.VPCID)
			}
			rule.GroupIDs = []string{src.ID}
		}
		for _, id := range rule.GroupIDs {
			if id == g.ID {
				continue
			}
			src, err := LookupSecurityGroup(tx, r.account, r.region, id)
			if err != nil {
				return nil, err
			}
			if src == nil || src.VPCID != g.VPCID {
				return nil, awsapi.Errorf("InvalidGroup.NotFound", "The security group '%s' does not exist", id)
			}
		}
		out = append(out, rule)
	}
	return out, nil
}

// sameRule tells whether two rules are the same permission (protocol,
// ports, source); ids and descriptions do not count, as in EC2.
func sameRule(a, b Rule) bool {
	return a.Protocol == b.Protocol && eqPort(a.FromPort, b.FromPort) && eqPort(a.ToPort, b.ToPort) &&
		slices.Equal(a.CIDRs, b.CIDRs) && slices.Equal(a.GroupIDs, b.GroupIDs)
}

// describeRule spells a rule the way EC2's duplicate error does.
func describeRule(x Rule) string {
	peer := strings.Join(append(slices.Clone(x.CIDRs), x.GroupIDs...), ", ")
	proto := strings.ToUpper(x.Protocol)
	if x.Protocol == "-1" {
		proto = "ALL"
	}
	if x.FromPort == nil {
		return fmt.Sprintf("peer: %s, %s, ALLOW", peer, proto)
	}
	if x.Protocol == "icmp" {
		return fmt.Sprintf("peer: %s, ICMP, type: %d, code: %d, ALLOW", peer, *x.FromPort, *x.ToPort)
	}
	return fmt.Sprintf("peer: %s, %s, from port: %d, to port: %d, ALLOW", peer, proto, *x.FromPort, *x.ToPort)
}

type securityGroupRuleXML struct {
	SecurityGroupRuleID  string              `xml:"securityGroupRuleId"`
	GroupID              string              `xml:"groupId"`
	GroupOwnerID         string              `xml:"groupOwnerId"`
	IsEgress             bool                `xml:"isEgress"`
	IPProtocol           string              `xml:"ipProtocol"`
	FromPort             int32               `xml:"fromPort"`
	ToPort               int32               `xml:"toPort"`
	CidrIpv4             string              `xml:"cidrIpv4,omitempty"`
	ReferencedGroupInfo  *referencedGroupXML `xml:"referencedGroupInfo,omitempty"`
	Description          string              `xml:"description,omitempty"`
	TagSet               []tagXML            `xml:"tagSet>item"`
	SecurityGroupRuleArn string              `xml:"securityGroupRuleArn"`
}

type referencedGroupXML struct {
	GroupID string `xml:"groupId"`
	UserID  string `xml:"userId"`
}

func ruleXML(r *request, g *SecurityGroup, x Rule, egress bool) securityGroupRuleXML {
	out := securityGroupRuleXML{
		SecurityGroupRuleID:  x.ID,
		GroupID:              g.ID,
		GroupOwnerID:         g.OwnerID,
		IsEgress:             egress,
		IPProtocol:           x.Protocol,
		FromPort:             -1,
		ToPort:               -1,
		Description:          x.Description,
		TagSet:               []tagXML{},
		SecurityGroupRuleArn: fmt.Sprintf("arn:aws:ec2:%s:%s:security-group-rule/%s", r.region, r.account, x.ID),
	}
	if x.FromPort != nil {
		out.FromPort, out.ToPort = *x.FromPort, *x.ToPort
	}
	if len(x.CIDRs) > 0 {
		out.CidrIpv4 = x.CIDRs[0]
	}
	if len(x.GroupIDs) > 0 {
		out.ReferencedGroupInfo = &referencedGroupXML{GroupID: x.GroupIDs[0], UserID: g.OwnerID}
	}
	return out
}

type authorizeResponse struct {
	ResponseHeader
	Return             bool                   `xml:"return"`
	SecurityGroupRules []securityGroupRuleXML `xml:"securityGroupRuleSet>item"`
}

func (s *Service) authorizeIngress(r *request) (response, error) { return s.authorize(r, false) }
func (s *Service) authorizeEgress(r *request) (response, error)  { return s.authorize(r, true) }

func (s *Service) authorize(r *request, egress bool) (response, error) {
	specs, err := r.ruleSpecs()
	if err != nil {
		return nil, err
	}
	out := &authorizeResponse{Return: true}
	err = s.Store.Update(r.ctx, func(tx state.Tx) error {
		out.SecurityGroupRules = nil
		g, err := r.targetGroup(tx)
		if err != nil {
			return err
		}
		rules, err := resolve(tx, r, g, specs)
		if err != nil {
			return err
		}
		have := &g.Ingress
		if egress {
			have = &g.Egress
		}
		for _, x := range rules {
			if slices.ContainsFunc(*have, func(h Rule) bool { return sameRule(h, x) }) {
				return awsapi.Errorf("InvalidPermission.Duplicate", "the specified rule %q already exists", describeRule(x))
			}
			x.ID = newID("sgr")
			*have = append(*have, x)
			out.SecurityGroupRules = append(out.SecurityGroupRules, ruleXML(r, g, x, egress))
		}
		if len(*have) > maxRules {
			return awsapi.Errorf("RulesPerSecurityGroupLimitExceeded", "The maximum number of rules per security group has been reached.")
		}
		return tx.Put(kindSecurityGroup, scopePrefix(r.account, r.region)+g.ID, g)
	})
	if err != nil {
		return nil, err
	}
	s.changed(ChangeSecurityGroup)
	return out, nil
}

type revokedRuleXML struct {
	SecurityGroupRuleID string `xml:"securityGroupRuleId"`
	GroupID             string `xml:"groupId"`
	IsEgress            bool   `xml:"isEgress"`
	IPProtocol          string `xml:"ipProtocol"`
	FromPort            int32  `xml:"fromPort"`
	ToPort              int32  `xml:"toPort"`
	CidrIpv4            string `xml:"cidrIpv4,omitempty"`
	ReferencedGroupID   string `xml:"referencedGroupId,omitempty"`
	Description         string `xml:"description,omitempty"`
}

type revokeResponse struct {
	ResponseHeader
	Return               bool              `xml:"return"`
	UnknownIPPermissions []ipPermissionXML `xml:"unknownIpPermissionSet>item,omitempty"`
	RevokedRules         []revokedRuleXML  `xml:"revokedSecurityGroupRuleSet>item"`
}

func (s *Service) revokeIngress(r *request) (response, error) { return s.revoke(r, false) }
func (s *Service) revokeEgress(r *request) (response, error)  { return s.revoke(r, true) }

func (s *Service) revoke(r *request, egress bool) (response, error) {
	ruleIDs := r.list("SecurityGroupRuleId")
	var specs []ruleSpec
	if len(ruleIDs) == 0 {
		var err error
		if specs, err = r.ruleSpecs(); err != nil {
			return nil, err
		}
	}
	out := &revokeResponse{Return: true}
	var removed bool
	err := s.Store.Update(r.ctx, func(tx state.Tx) error {
		out.RevokedRules, out.UnknownIPPermissions, out.Return, removed = nil, nil, true, false
		g, err := r.targetGroup(tx)
		if err != nil {
			return err
		}
		have := &g.Ingress
		if egress {
			have = &g.Egress
		}
		var unknown []Rule
		take := func(i int) {
			x := (*have)[i]
			rx := ruleXML(r, g, x, egress)
			out.RevokedRules = append(out.RevokedRules, revokedRuleXML{
				SecurityGroupRuleID: x.ID, GroupID: g.ID, IsEgress: egress, IPProtocol: x.Protocol,
				FromPort: rx.FromPort, ToPort: rx.ToPort, CidrIpv4: rx.CidrIpv4, Description: x.Description,
			})
			if len(x.GroupIDs) > 0 {
				out.RevokedRules[len(out.RevokedRules)-1].ReferencedGroupID = x.GroupIDs[0]
			}
			*have = slices.Delete(*have, i, i+1)
		}
		for _, id := range ruleIDs {
			i := slices.IndexFunc(*have, func(h Rule) bool { return h.ID == id })
			if i < 0 {
				return awsapi.Errorf("InvalidSecurityGroupRuleId.NotFound", "The security group rule ID '%s' does not exist", id)
			}
			take(i)
		}
		if len(specs) > 0 {
			rules, err := resolve(tx, r, g, specs)
			if err != nil {
				return err
			}
			for _, x := range rules {
				i := slices.IndexFunc(*have, func(h Rule) bool { return sameRule(h, x) })
				if i < 0 {
					unknown = append(unknown, x)
					continue
				}
				take(i)
			}
		}
		if len(unknown) > 0 {
			def, err := defaultVPCID(tx, r.account, r.region)
			if err != nil {
				return err
			}
			// EC2 refuses the whole call in other VPCs; in the default
			// VPC it revokes what matched and lists the rest.
			if g.VPCID != def {
				return awsapi.Errorf("InvalidPermission.NotFound", "The specified rule does not exist in this security group.")
			}
			out.Return = false
			out.UnknownIPPermissions = permissionsXML(g.OwnerID, unknown)
		}
		if len(out.RevokedRules) == 0 {
			return nil
		}
		removed = true
		return tx.Put(kindSecurityGroup, scopePrefix(r.account, r.region)+g.ID, g)
	})
	if err != nil {
		return nil, err
	}
	if removed {
		s.changed(ChangeSecurityGroup)
	}
	return out, nil
}

type describeSecurityGroupRulesResponse struct {
	ResponseHeader
	SecurityGroupRules []securityGroupRuleXML `xml:"securityGroupRuleSet>item"`
	NextToken          string                 `xml:"nextToken,omitempty"`
}

func (s *Service) describeSecurityGroupRules(r *request) (response, error) {
	ids := r.list("SecurityGroupRuleId")
	fs := r.filters()
	p, err := r.paging("securityGroupRuleIds", len(ids) > 0)
	if err != nil {
		return nil, err
	}
	if err := checkIDs("InvalidSecurityGroupRuleId.Malformed", "sgr", ids); err != nil {
		return nil, err
	}
	var groups []SecurityGroup
	err = s.Store.View(r.ctx, func(tx state.Tx) error {
		groups, err = SecurityGroups(tx, r.account, r.region)
		return err
	})
	if err != nil {
		return nil, err
	}
	var all []securityGroupRuleXML
	for i := range groups {
		g := &groups[i]
		for _, x := range g.Ingress {
			all = append(all, ruleXML(r, g, x, false))
		}
		for _, x := range g.Egress {
			all = append(all, ruleXML(r, g, x, true))
		}
	}
	ruleID := func(x securityGroupRuleXML) string { return x.SecurityGroupRuleID }
	slices.SortFunc(all, func(a, b securityGroupRuleXML) int {
		return strings.Compare(a.SecurityGroupRuleID, b.SecurityGroupRuleID)
	})
	all, err = selectByID(all, ruleID, ids, "InvalidSecurityGroupRuleId.NotFound", "security group rule ID")
	if err != nil {
		return nil, err
	}
	var matched []securityGroupRuleXML
	for _, x := range all {
		ok, err := matchAll(fs, func(name string) ([]string, bool) {
			switch name {
			case "group-id":
				return []string{x.GroupID}, true
			case "security-group-rule-id":
				return []string{x.SecurityGroupRuleID}, true
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
	matched, next := page(matched, ruleID, p)
	return &describeSecurityGroupRulesResponse{SecurityGroupRules: append([]securityGroupRuleXML{}, matched...), NextToken: next}, nil
}
