package elbv2

import (
	"encoding/json"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/ec2"
	"github.com/gantry-dev/gantry/internal/state"
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,30}[A-Za-z0-9])?$`)

func checkName(what, name string) error {
	if !nameRE.MatchString(name) || strings.HasPrefix(name, "internal-") {
		return validation("%s name '%s' can have a maximum of 32 characters, can contain only alphanumeric characters or hyphens, and must not begin or end with a hyphen", what, name)
	}
	return nil
}

// ---- XML shapes ----

type azXML struct {
	ZoneName string
	SubnetId string
}

type lbXML struct {
	LoadBalancerArn       string
	DNSName               string
	CanonicalHostedZoneId string
	CreatedTime           string
	LoadBalancerName      string
	Scheme                string
	VpcId                 string
	State                 struct{ Code string }
	Type                  string
	AvailabilityZones     []azXML  `xml:"AvailabilityZones>member"`
	SecurityGroups        []string `xml:"SecurityGroups>member"`
	IpAddressType         string
}

func (l *lbXML) from(r *lbRecord) *lbXML {
	*l = lbXML{LoadBalancerArn: r.ARN, DNSName: r.Address, CanonicalHostedZoneId: "Z35SXDOTRQ7X7K",
		CreatedTime: r.Created.UTC().Format("2006-01-02T15:04:05.000Z"), LoadBalancerName: r.Name, Scheme: r.Scheme,
		VpcId: r.VpcID, Type: r.Type, SecurityGroups: r.SecurityGroups, IpAddressType: r.IPAddressType}
	l.State.Code = "active"
	for _, z := range r.Zones {
		l.AvailabilityZones = append(l.AvailabilityZones, azXML{z.Zone, z.SubnetID})
	}
	return l
}

type tgXML struct {
	TargetGroupArn             string
	TargetGroupName            string
	Protocol                   string
	Port                       int32
	VpcId                      string
	HealthCheckProtocol        string
	HealthCheckPort            string
	HealthCheckEnabled         bool
	HealthCheckIntervalSeconds int32
	HealthCheckTimeoutSeconds  int32
	HealthyThresholdCount      int32
	UnhealthyThresholdCount    int32
	HealthCheckPath            string
	Matcher                    struct{ HttpCode string }
	LoadBalancerArns           []string `xml:"LoadBalancerArns>member"`
	TargetType                 string
	ProtocolVersion            string
	IpAddressType              string
}

func tgOut(g *tgRecord, lbs []string) tgXML {
	h := g.HealthCheck
	x := tgXML{TargetGroupArn: g.ARN, TargetGroupName: g.Name, Protocol: g.Protocol, Port: g.Port, VpcId: g.VpcID,
		HealthCheckProtocol: h.Protocol, HealthCheckPort: h.Port, HealthCheckEnabled: h.Enabled,
		HealthCheckIntervalSeconds: h.Interval, HealthCheckTimeoutSeconds: h.Timeout, HealthyThresholdCount: h.Healthy,
		UnhealthyThresholdCount: h.Unhealthy, HealthCheckPath: h.Path, LoadBalancerArns: lbs, TargetType: g.TargetType,
		ProtocolVersion: g.ProtocolVersion, IpAddressType: "ipv4"}
	x.Matcher.HttpCode = h.Matcher
	return x
}

type listenerXML struct {
	ListenerArn     string
	LoadBalancerArn string
	Port            int32
	Protocol        string
	DefaultActions  []actionXML `xml:"DefaultActions>member"`
}

func listenerOut(l *listenerRecord) listenerXML {
	x := listenerXML{ListenerArn: l.ARN, LoadBalancerArn: l.LBARN, Port: l.Port, Protocol: l.Protocol}
	for i := range l.Actions {
		x.DefaultActions = append(x.DefaultActions, actionOut(&l.Actions[i]))
	}
	return x
}

// ---- helpers over the store ----

func getLB(tx state.Tx, r *request, arn string) (*lbRecord, error) {
	var lb lbRecord
	if !strings.HasPrefix(arn, arnPrefix(r.account, r.region)+"loadbalancer/") {
		return nil, awsapi.Errorf("LoadBalancerNotFound", "Load balancer '%s' not found", arn)
	}
	ok, err := tx.Get(kindLB, arn, &lb)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, awsapi.Errorf("LoadBalancerNotFound", "Load balancer '%s' not found", arn)
	}
	return &lb, nil
}

func getTG(tx state.Tx, r *request, arn string) (*tgRecord, error) {
	var g tgRecord
	if strings.HasPrefix(arn, arnPrefix(r.account, r.region)+"targetgroup/") {
		ok, err := tx.Get(kindTG, arn, &g)
		if err != nil {
			return nil, err
		}
		if ok {
			return &g, nil
		}
	}
	return nil, awsapi.Errorf("TargetGroupNotFound", "Target groups '%s' not found", arn)
}

func listeners(tx state.Tx, prefix string) ([]listenerRecord, error) {
	return state.List[listenerRecord](tx, kindListener, prefix)
}

// lbsOfTG lists the load balancers whose listeners forward to a group.
func lbsOfTG(tx state.Tx, r *request, tgARN string) ([]string, error) {
	ls, err := listeners(tx, arnPrefix(r.account, r.region)+"listener/")
	if err != nil {
		return nil, err
	}
	rs, err := state.List[ruleRecord](tx, kindRule, arnPrefix(r.account, r.region)+"listener-rule/")
	if err != nil {
		return nil, err
	}
	lbOf := map[string]string{}
	var out []string
	use := func(lb string, acts []actionRecord) {
		for _, a := range acts {
			for _, g := range a.groups() {
				if g.ARN == tgARN && lb != "" && !slices.Contains(out, lb) {
					out = append(out, lb)
				}
			}
		}
	}
	for _, l := range ls {
		lbOf[l.ARN] = l.LBARN
		use(l.LBARN, l.Actions)
	}
	for _, x := range rs {
		use(lbOf[x.ListenerARN], x.Actions)
	}
	slices.Sort(out)
	return out, nil
}

// ---- load balancers ----

func (s *Service) createLoadBalancer(r *request) (any, error) {
	name, err := r.required("Name")
	if err != nil {
		return nil, err
	}
	if err := checkName("Load balancer", name); err != nil {
		return nil, err
	}
	typ := r.param("Type")
	if typ == "" {
		typ = "application"
	}
	if typ != "application" {
		return nil, validation("Load balancer type '%s' is not supported; Gantry runs application load balancers", typ)
	}
	scheme := r.param("Scheme")
	if scheme == "" {
		scheme = "internet-facing"
	}
	if scheme != "internet-facing" && scheme != "internal" {
		return nil, validation("Value '%s' at 'scheme' failed to satisfy constraint: Member must satisfy enum value set: [internet-facing, internal]", scheme)
	}
	ipType := r.param("IpAddressType")
	if ipType == "" {
		ipType = "ipv4"
	}
	if ipType != "ipv4" {
		return nil, validation("IP address type '%s' is not supported", ipType)
	}
	subnets := r.list("Subnets")
	for _, p := range r.structs("SubnetMappings") {
		subnets = append(subnets, r.param(p+"SubnetId"))
	}
	if len(subnets) == 0 {
		return nil, validation("At least two subnets in two different Availability Zones must be specified")
	}
	groups := r.list("SecurityGroups")
	tags, err := r.tags()
	if err != nil {
		return nil, err
	}
	var out *lbRecord
	err = s.Store.Update(r.ctx, func(tx state.Tx) error {
		lb := lbRecord{Name: name, Scheme: scheme, Type: typ, IPAddressType: ipType, Created: time.Now(), Tags: tags}
		zones := map[string]bool{}
		for _, id := range subnets {
			sn, err := ec2.LookupSubnet(tx, r.account, r.region, id)
			if err != nil {
				return err
			}
			if sn == nil {
				return awsapi.Errorf("SubnetNotFound", "The specified subnet does not exist: '%s'", id)
			}
			if lb.VpcID == "" {
				lb.VpcID = sn.VPCID
			} else if lb.VpcID != sn.VPCID {
				return awsapi.Errorf("InvalidSubnet", "The subnets '%s' must all be in the same VPC", strings.Join(subnets, ", "))
			}
			if zones[sn.AvailabilityZone] {
				return awsapi.Errorf("InvalidConfigurationRequest", "A load balancer cannot be attached to multiple subnets in the same Availability Zone")
			}
			zones[sn.AvailabilityZone] = true
			lb.Zones = append(lb.Zones, zoneRef{sn.ID, sn.AvailabilityZone})
		}
		if len(lb.Zones) < 2 {
			return validation("At least two subnets in two different Availability Zones must be specified")
		}
		if len(groups) == 0 {
			g, err := ec2.VPCDefaultSecurityGroup(tx, r.account, r.region, lb.VpcID)
			if err != nil {
				return err
			}
			if g != nil {
				groups = []string{g.ID}
			}
		}
		for _, id := range groups {
			g, err := ec2.LookupSecurityGroup(tx, r.account, r.region, id)
			if err != nil {
				return err
			}
			if g == nil || g.VPCID != lb.VpcID {
				return awsapi.Errorf("InvalidSecurityGroup", "Security group '%s' does not exist", id)
			}
		}
		lb.SecurityGroups = groups
		prefix := arnPrefix(r.account, r.region) + "loadbalancer/app/"
		existing, err := state.List[lbRecord](tx, kindLB, prefix)
		if err != nil {
			return err
		}
		for _, e := range existing {
			if e.Name == name {
				return awsapi.Errorf("DuplicateLoadBalancerName", "A load balancer with the same name '%s' exists, but with different settings", name)
			}
		}
		lb.ARN = prefix + name + "/" + newHex(8)
		if lb.Address, err = randomAddress(s.addressRange()); err != nil {
			return err
		}
		out = &lb
		return tx.Put(kindLB, lb.ARN, &lb)
	})
	if err != nil {
		return nil, err
	}
	s.changed()
	return struct {
		LoadBalancers []lbXML `xml:"LoadBalancers>member"`
	}{[]lbXML{*new(lbXML).from(out)}}, nil
}

func (s *Service) addressRange() string {
	if s.AddressRange != "" {
		return s.AddressRange
	}
	return DefaultAddressRange
}

// pageOf applies Marker/PageSize over items sorted by key.
func pageOf[T any](r *request, items []T, key func(T) string) ([]T, string, error) {
	size, err := r.intParam("PageSize", 400, 1, 400)
	if err != nil {
		return nil, "", err
	}
	if m := r.param("Marker"); m != "" {
		i := slices.IndexFunc(items, func(t T) bool { return key(t) > m })
		if i < 0 {
			i = len(items)
		}
		items = items[i:]
	}
	if len(items) > int(size) {
		return items[:size], key(items[size-1]), nil
	}
	return items, "", nil
}

func (s *Service) describeLoadBalancers(r *request) (any, error) {
	arns, names := r.list("LoadBalancerArns"), r.list("Names")
	if len(arns) > 0 && len(names) > 0 {
		return nil, validation("Load balancer names and load balancer ARNs cannot be specified at the same time")
	}
	var all []lbRecord
	err := s.Store.View(r.ctx, func(tx state.Tx) error {
		var err error
		all, err = state.List[lbRecord](tx, kindLB, arnPrefix(r.account, r.region)+"loadbalancer/")
		return err
	})
	if err != nil {
		return nil, err
	}
	var sel []lbRecord
	switch {
	case len(arns) > 0:
		for _, a := range arns {
			i := slices.IndexFunc(all, func(l lbRecord) bool { return l.ARN == a })
			if i < 0 {
				return nil, awsapi.Errorf("LoadBalancerNotFound", "Load balancers '[%s]' not found", a)
			}
			sel = append(sel, all[i])
		}
	case len(names) > 0:
		for _, n := range names {
			i := slices.IndexFunc(all, func(l lbRecord) bool { return l.Name == n })
			if i < 0 {
				return nil, awsapi.Errorf("LoadBalancerNotFound", "Load balancers '[%s]' not found", n)
			}
			sel = append(sel, all[i])
		}
	default:
		sel = all
	}
	sel, next, err := pageOf(r, sel, func(l lbRecord) string { return l.ARN })
	if err != nil {
		return nil, err
	}
	out := struct {
		LoadBalancers []lbXML `xml:"LoadBalancers>member"`
		NextMarker    string  `xml:",omitempty"`
	}{LoadBalancers: []lbXML{}, NextMarker: next}
	for i := range sel {
		out.LoadBalancers = append(out.LoadBalancers, *new(lbXML).from(&sel[i]))
	}
	return out, nil
}

func (s *Service) deleteLoadBalancer(r *request) (any, error) {
	arn, err := r.required("LoadBalancerArn")
	if err != nil {
		return nil, err
	}
	err = s.Store.Update(r.ctx, func(tx state.Tx) error {
		lb, err := getLB(tx, r, arn)
		if err != nil {
			if awsapi.AsError(err).Code == "LoadBalancerNotFound" {
				return nil // deleting twice succeeds, as in AWS
			}
			return err
		}
		if err := deletionProtected(lb); err != nil {
			return err
		}
		ls, err := listeners(tx, listenerPrefix(arn))
		if err != nil {
			return err
		}
		for _, l := range ls {
			if err := deleteRulesOf(tx, l.ARN); err != nil {
				return err
			}
			if _, err := tx.Delete(kindListener, l.ARN); err != nil {
				return err
			}
		}
		_, err = tx.Delete(kindLB, arn)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.changed()
	return struct{}{}, nil
}

// listenerPrefix lists a load balancer's listeners:
// ...:loadbalancer/app/NAME/ID -> ...:listener/app/NAME/ID/
func listenerPrefix(lbARN string) string {
	return strings.Replace(lbARN, ":loadbalancer/", ":listener/", 1) + "/"
}

// ---- target groups ----

func (s *Service) createTargetGroup(r *request) (any, error) {
	name, err := r.required("Name")
	if err != nil {
		return nil, err
	}
	if err := checkName("Target group", name); err != nil {
		return nil, err
	}
	tt := r.param("TargetType")
	if tt == "" {
		tt = "instance"
	}
	if tt != "ip" {
		return nil, validation("Target type '%s' is not supported; Fargate tasks are registered by IP address (target type 'ip')", tt)
	}
	proto := r.param("Protocol")
	if proto != "HTTP" {
		if proto == "" {
			return nil, validation("A protocol must be specified")
		}
		return nil, validation("Protocol '%s' is not supported; use HTTP", proto)
	}
	if !r.has("Port") {
		return nil, validation("A port must be specified")
	}
	port, err := r.intParam("Port", 0, 1, 65535)
	if err != nil {
		return nil, err
	}
	vpc := r.param("VpcId")
	if vpc == "" {
		return nil, validation("A VPC ID must be specified")
	}
	pv := r.param("ProtocolVersion")
	if pv == "" {
		pv = "HTTP1"
	}
	if pv != "HTTP1" {
		return nil, validation("Protocol version '%s' is not supported", pv)
	}
	h, err := r.healthCheckIn(healthCheck{Enabled: true, Protocol: "HTTP", Port: "traffic-port", Path: "/",
		Interval: 30, Timeout: 5, Healthy: 5, Unhealthy: 2, Matcher: "200"})
	if err != nil {
		return nil, err
	}
	tags, err := r.tags()
	if err != nil {
		return nil, err
	}
	var out *tgRecord
	err = s.Store.Update(r.ctx, func(tx state.Tx) error {
		v, err := ec2.LookupVPC(tx, r.account, r.region, vpc)
		if err != nil {
			return err
		}
		if v == nil {
			return validation("The VPC ID '%s' is not found", vpc)
		}
		prefix := arnPrefix(r.account, r.region) + "targetgroup/"
		existing, err := state.List[tgRecord](tx, kindTG, prefix)
		if err != nil {
			return err
		}
		for _, e := range existing {
			if e.Name == name {
				return awsapi.Errorf("DuplicateTargetGroupName", "A target group with the same name '%s' exists, but with different settings", name)
			}
		}
		g := tgRecord{ARN: prefix + name + "/" + newHex(8), Name: name, Protocol: proto, ProtocolVersion: pv, Port: port,
			VpcID: vpc, TargetType: tt, HealthCheck: h, Tags: tags,
			Attributes: map[string]string{"deregistration_delay.timeout_seconds": "300"}}
		out = &g
		return tx.Put(kindTG, g.ARN, &g)
	})
	if err != nil {
		return nil, err
	}
	s.changed()
	return struct {
		TargetGroups []tgXML `xml:"TargetGroups>member"`
	}{[]tgXML{tgOut(out, nil)}}, nil
}

// matcher is a parsed HttpCode: "200", "200,302", "200-299".
type matcher [][2]int

func parseMatcher(v string) (matcher, error) {
	var m matcher
	for _, part := range strings.Split(v, ",") {
		lo, hi, rng := strings.Cut(strings.TrimSpace(part), "-")
		a, err1 := strconv.Atoi(lo)
		b := a
		var err2 error
		if rng {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || a < 200 || b > 499 || a > b {
			return nil, validation("Health check matcher HTTP code '%s' must be within '200-499'", v)
		}
		m = append(m, [2]int{a, b})
	}
	return m, nil
}

func (m matcher) match(code int) bool {
	for _, r := range m {
		if code >= r[0] && code <= r[1] {
			return true
		}
	}
	return false
}

func (s *Service) describeTargetGroups(r *request) (any, error) {
	arns, names, lbARN := r.list("TargetGroupArns"), r.list("Names"), r.param("LoadBalancerArn")
	var sel []tgRecord
	lbsOf := map[string][]string{}
	err := s.Store.View(r.ctx, func(tx state.Tx) error {
		all, err := state.List[tgRecord](tx, kindTG, arnPrefix(r.account, r.region)+"targetgroup/")
		if err != nil {
			return err
		}
		ls, err := listeners(tx, arnPrefix(r.account, r.region)+"listener/")
		if err != nil {
			return err
		}
		for _, l := range ls {
			for _, a := range l.Actions {
				if !slices.Contains(lbsOf[a.TargetGroupARN], l.LBARN) {
					lbsOf[a.TargetGroupARN] = append(lbsOf[a.TargetGroupARN], l.LBARN)
				}
			}
		}
		switch {
		case len(arns) > 0:
			for _, a := range arns {
				i := slices.IndexFunc(all, func(g tgRecord) bool { return g.ARN == a })
				if i < 0 {
					return awsapi.Errorf("TargetGroupNotFound", "Target groups '[%s]' not found", a)
				}
				sel = append(sel, all[i])
			}
		case len(names) > 0:
			for _, n := range names {
				i := slices.IndexFunc(all, func(g tgRecord) bool { return g.Name == n })
				if i < 0 {
					return awsapi.Errorf("TargetGroupNotFound", "One or more target groups not found")
				}
				sel = append(sel, all[i])
			}
		case lbARN != "":
			if _, err := getLB(tx, r, lbARN); err != nil {
				return err
			}
			for _, g := range all {
				if slices.Contains(lbsOf[g.ARN], lbARN) {
					sel = append(sel, g)
				}
			}
		default:
			sel = all
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sel, next, err := pageOf(r, sel, func(g tgRecord) string { return g.ARN })
	if err != nil {
		return nil, err
	}
	out := struct {
		TargetGroups []tgXML `xml:"TargetGroups>member"`
		NextMarker   string  `xml:",omitempty"`
	}{TargetGroups: []tgXML{}, NextMarker: next}
	for i := range sel {
		l := lbsOf[sel[i].ARN]
		slices.Sort(l)
		out.TargetGroups = append(out.TargetGroups, tgOut(&sel[i], l))
	}
	return out, nil
}

func (s *Service) deleteTargetGroup(r *request) (any, error) {
	arn, err := r.required("TargetGroupArn")
	if err != nil {
		return nil, err
	}
	err = s.Store.Update(r.ctx, func(tx state.Tx) error {
		if _, err := getTG(tx, r, arn); err != nil {
			if awsapi.AsError(err).Code == "TargetGroupNotFound" {
				return nil
			}
			return err
		}
		lbs, err := lbsOfTG(tx, r, arn)
		if err != nil {
			return err
		}
		if len(lbs) > 0 {
			return awsapi.Errorf("ResourceInUse", "Target group '%s' is currently in use by a listener or a rule", arn)
		}
		_, err = tx.Delete(kindTG, arn)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.changed()
	return struct{}{}, nil
}

type attrXML struct {
	Key   string
	Value string
}

// ---- listeners ----

func (s *Service) createListener(r *request) (any, error) {
	lbARN, err := r.required("LoadBalancerArn")
	if err != nil {
		return nil, err
	}
	proto := r.param("Protocol")
	if proto == "" {
		proto = "HTTP"
	}
	if proto != "HTTP" {
		return nil, awsapi.Errorf("UnsupportedProtocol", "Protocol '%s' is not supported; Gantry's listeners speak HTTP", proto)
	}
	if !r.has("Port") {
		return nil, validation("A listener port must be specified")
	}
	port, err := r.intParam("Port", 0, 1, 65535)
	if err != nil {
		return nil, err
	}
	acts, err := r.actions("DefaultActions")
	if err != nil {
		return nil, err
	}
	tags, err := r.tags()
	if err != nil {
		return nil, err
	}
	var out *listenerRecord
	err = s.Store.Update(r.ctx, func(tx state.Tx) error {
		lb, err := getLB(tx, r, lbARN)
		if err != nil {
			return err
		}
		if err := checkActions(tx, r, lb, acts); err != nil {
			return err
		}
		ls, err := listeners(tx, listenerPrefix(lbARN))
		if err != nil {
			return err
		}
		if slices.ContainsFunc(ls, func(l listenerRecord) bool { return l.Port == port }) {
			return awsapi.Errorf("DuplicateListener", "A listener already exists on this port for this load balancer '%s'", lbARN)
		}
		if err := s.plane.checkBind(lb.Address, port); err != nil {
			return awsapi.Errorf("InvalidConfigurationRequest", "Gantry cannot listen on %s:%d: %v", lb.Address, port, err)
		}
		l := listenerRecord{ARN: listenerPrefix(lbARN) + newHex(8), LBARN: lbARN, Port: port, Protocol: proto, Actions: acts, Tags: tags}
		out = &l
		return tx.Put(kindListener, l.ARN, &l)
	})
	if err != nil {
		return nil, err
	}
	if err := s.syncPlane(r); err != nil {
		return nil, err
	}
	return struct {
		Listeners []listenerXML `xml:"Listeners>member"`
	}{[]listenerXML{listenerOut(out)}}, nil
}

func (s *Service) describeListeners(r *request) (any, error) {
	lbARN, arns := r.param("LoadBalancerArn"), r.list("ListenerArns")
	if lbARN == "" && len(arns) == 0 {
		return nil, validation("You must specify either listener ARNs or a load balancer ARN")
	}
	if lbARN != "" && len(arns) > 0 {
		return nil, validation("Listener ARNs and a load balancer ARN cannot be specified at the same time")
	}
	var sel []listenerRecord
	err := s.Store.View(r.ctx, func(tx state.Tx) error {
		if lbARN != "" {
			if _, err := getLB(tx, r, lbARN); err != nil {
				return err
			}
			var err error
			sel, err = listeners(tx, listenerPrefix(lbARN))
			return err
		}
		for _, a := range arns {
			var l listenerRecord
			ok := false
			if strings.HasPrefix(a, arnPrefix(r.account, r.region)+"listener/") {
				var err error
				if ok, err = tx.Get(kindListener, a, &l); err != nil {
					return err
				}
			}
			if !ok {
				return awsapi.Errorf("ListenerNotFound", "One or more listeners not found")
			}
			sel = append(sel, l)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sel, next, err := pageOf(r, sel, func(l listenerRecord) string { return l.ARN })
	if err != nil {
		return nil, err
	}
	out := struct {
		Listeners  []listenerXML `xml:"Listeners>member"`
		NextMarker string        `xml:",omitempty"`
	}{Listeners: []listenerXML{}, NextMarker: next}
	for i := range sel {
		out.Listeners = append(out.Listeners, listenerOut(&sel[i]))
	}
	return out, nil
}

func (s *Service) deleteListener(r *request) (any, error) {
	arn, err := r.required("ListenerArn")
	if err != nil {
		return nil, err
	}
	err = s.Store.Update(r.ctx, func(tx state.Tx) error {
		ok := false
		if strings.HasPrefix(arn, arnPrefix(r.account, r.region)+"listener/") {
			if ok, err = tx.Delete(kindListener, arn); err != nil {
				return err
			}
		}
		if !ok {
			return awsapi.Errorf("ListenerNotFound", "Listener '%s' not found", arn)
		}
		return deleteRulesOf(tx, arn)
	})
	if err != nil {
		return nil, err
	}
	if err := s.syncPlane(r); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// ---- targets ----

type targetIn struct {
	id   string
	port int32
}

func (r *request) targets(g *tgRecord) ([]targetIn, error) {
	var out []targetIn
	for _, p := range r.structs("Targets") {
		id := r.param(p + "Id")
		if id == "" {
			return nil, validation("A target ID must be specified")
		}
		port, err := r.intParam(p+"Port", g.Port, 1, 65535)
		if err != nil {
			return nil, err
		}
		out = append(out, targetIn{id, port})
	}
	if len(out) == 0 && !r.has("TargetGroupArn") {
		return nil, validation("1 validation error detected: Value null at 'targets' failed to satisfy constraint: Member must not be null")
	}
	return out, nil
}

func (s *Service) registerTargets(r *request) (any, error) {
	arn, err := r.required("TargetGroupArn")
	if err != nil {
		return nil, err
	}
	if len(r.structs("Targets")) == 0 {
		return nil, validation("1 validation error detected: Value null at 'targets' failed to satisfy constraint: Member must not be null")
	}
	err = s.Store.Update(r.ctx, func(tx state.Tx) error {
		g, err := getTG(tx, r, arn)
		if err != nil {
			return err
		}
		ts, err := r.targets(g)
		if err != nil {
			return err
		}
		vpc, err := ec2.LookupVPC(tx, r.account, r.region, g.VpcID)
		if err != nil {
			return err
		}
		for _, t := range ts {
			ip, err := netip.ParseAddr(t.id)
			if err != nil || !ip.Is4() {
				return awsapi.Errorf("InvalidTarget", "The IP address '%s' is not a valid IPv4 address", t.id)
			}
			if vpc != nil {
				if p, err := netip.ParsePrefix(vpc.CIDR); err == nil && !p.Contains(ip) {
					return awsapi.Errorf("InvalidTarget", "The IP address '%s' is not within the CIDR of VPC '%s'", t.id, g.VpcID)
				}
			}
			g.register(t.id, t.port, "")
		}
		return tx.Put(kindTG, arn, g)
	})
	if err != nil {
		return nil, err
	}
	s.changed()
	return struct{}{}, nil
}

// register adds a target or takes it back from draining.
func (g *tgRecord) register(id string, port int32, owner string) bool {
	for i := range g.Targets {
		t := &g.Targets[i]
		if t.ID == id && t.Port == port {
			if t.DrainUntil == nil && t.Owner == owner {
				return false
			}
			t.DrainUntil, t.Owner = nil, owner
			return true
		}
	}
	g.Targets = append(g.Targets, targetRecord{ID: id, Port: port, Owner: owner})
	return true
}

// deregister starts draining a target; with no delay it goes at once.
func (g *tgRecord) deregister(id string, port int32, now time.Time) bool {
	delay := g.drainDelay()
	for i := range g.Targets {
		t := &g.Targets[i]
		if t.ID == id && t.Port == port {
			if t.DrainUntil != nil {
				return false
			}
			if delay == 0 {
				g.Targets = slices.Delete(g.Targets, i, i+1)
				return true
			}
			until := now.Add(delay)
			t.DrainUntil = &until
			return true
		}
	}
	return false
}

func (s *Service) deregisterTargets(r *request) (any, error) {
	arn, err := r.required("TargetGroupArn")
	if err != nil {
		return nil, err
	}
	if len(r.structs("Targets")) == 0 {
		return nil, validation("1 validation error detected: Value null at 'targets' failed to satisfy constraint: Member must not be null")
	}
	err = s.Store.Update(r.ctx, func(tx state.Tx) error {
		g, err := getTG(tx, r, arn)
		if err != nil {
			return err
		}
		ts, err := r.targets(g)
		if err != nil {
			return err
		}
		now := time.Now()
		for _, t := range ts {
			if !slices.ContainsFunc(g.Targets, func(x targetRecord) bool { return x.ID == t.id && x.Port == t.port }) {
				return awsapi.Errorf("InvalidTarget", "The following targets are not registered in target group '%s': '%s:%d'", arn, t.id, t.port)
			}
			g.deregister(t.id, t.port, now)
		}
		return tx.Put(kindTG, arn, g)
	})
	if err != nil {
		return nil, err
	}
	s.changed()
	return struct{}{}, nil
}

type thdXML struct {
	Target struct {
		Id               string
		Port             int32
		AvailabilityZone string `xml:",omitempty"`
	}
	HealthCheckPort string
	TargetHealth    struct {
		State       string
		Reason      string `xml:",omitempty"`
		Description string `xml:",omitempty"`
	}
}

func (s *Service) describeTargetHealth(r *request) (any, error) {
	arn, err := r.required("TargetGroupArn")
	if err != nil {
		return nil, err
	}
	var g *tgRecord
	var used bool
	var zones []zoneRef
	err = s.Store.View(r.ctx, func(tx state.Tx) error {
		if g, err = getTG(tx, r, arn); err != nil {
			return err
		}
		lbs, err := lbsOfTG(tx, r, arn)
		if err != nil {
			return err
		}
		used = len(lbs) > 0
		for _, a := range lbs {
			if lb, err := getLB(tx, r, a); err == nil {
				zones = append(zones, lb.Zones...)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	ask, err := r.targets(g)
	if err != nil {
		return nil, err
	}
	out := struct {
		TargetHealthDescriptions []thdXML `xml:"TargetHealthDescriptions>member"`
	}{TargetHealthDescriptions: []thdXML{}}
	describe := func(id string, port int32, rec *targetRecord) {
		var d thdXML
		d.Target.Id, d.Target.Port = id, port
		d.HealthCheckPort = strconv.Itoa(int(port))
		if g.HealthCheck.Port != "traffic-port" {
			d.HealthCheckPort = g.HealthCheck.Port
		}
		switch {
		case rec == nil:
			d.TargetHealth.State, d.TargetHealth.Reason, d.TargetHealth.Description = "unused", "Target.NotRegistered", "Target is not registered to the target group"
		case rec.DrainUntil != nil:
			d.TargetHealth.State, d.TargetHealth.Reason, d.TargetHealth.Description = "draining", "Target.DeregistrationInProgress", "Target deregistration is in progress"
		case !used:
			d.TargetHealth.State, d.TargetHealth.Reason, d.TargetHealth.Description = "unused", "Target.NotInUse", "Target group is not configured to receive traffic from the load balancer"
		case !g.HealthCheck.Enabled:
			d.TargetHealth.State, d.TargetHealth.Reason, d.TargetHealth.Description = "unavailable", "Target.HealthCheckDisabled", "Health checks are disabled"
		default:
			st := s.plane.health(g.ARN, id, port)
			d.TargetHealth.State, d.TargetHealth.Reason, d.TargetHealth.Description = st.state, st.reason, st.desc
		}
		if rec != nil {
			d.Target.AvailabilityZone = zoneOf(id, zones, s, r)
		}
		out.TargetHealthDescriptions = append(out.TargetHealthDescriptions, d)
	}
	if len(ask) > 0 {
		for _, t := range ask {
			i := slices.IndexFunc(g.Targets, func(x targetRecord) bool { return x.ID == t.id && x.Port == t.port })
			if i < 0 {
				describe(t.id, t.port, nil)
			} else {
				describe(t.id, t.port, &g.Targets[i])
			}
		}
	} else {
		for i := range g.Targets {
			describe(g.Targets[i].ID, g.Targets[i].Port, &g.Targets[i])
		}
	}
	return out, nil
}

// zoneOf finds the availability zone of the subnet holding ip.
func zoneOf(ip string, _ []zoneRef, s *Service, r *request) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ""
	}
	zone := ""
	s.Store.View(r.ctx, func(tx state.Tx) error {
		sns, err := ec2.Subnets(tx, r.account, r.region, "")
		for _, sn := range sns {
			if sn.Prefix().Contains(a) {
				zone = sn.AvailabilityZone
			}
		}
		return err
	})
	return zone
}

var _ = json.Marshal
