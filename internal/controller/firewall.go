package controller

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/ec2"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/model"
	"github.com/gantry-dev/gantry/internal/state"
)

// FirewallChanged asks for the security-group state to be recomputed and
// pushed to the agents: after a task starts or stops, or a group changes
// (ec2.Service.OnChange). It never blocks; calls in a burst coalesce.
func (c *Controller) FirewallChanged() {
	c.fwOnce.Do(c.initFirewall)
	select {
	case c.fwKick <- struct{}{}:
	default:
	}
}

func (c *Controller) initFirewall() { c.fwKick = make(chan struct{}, 1) }

// firewallLoop pushes the state on every kick, and on every resync tick in
// case an agent lost it; an unchanged state is not pushed again until then.
func (c *Controller) firewallLoop(ctx context.Context, resync time.Duration) {
	c.fwOnce.Do(c.initFirewall)
	tick := time.NewTicker(resync)
	defer tick.Stop()
	last := ""
	for {
		force := false
		select {
		case <-ctx.Done():
			return
		case <-c.fwKick:
		case <-tick.C:
			force = true
		}
		st, err := c.firewallState(ctx)
		if err != nil {
			c.log().Warn("compute security-group state", "err", err)
			continue
		}
		b, _ := json.Marshal(st)
		if string(b) == last && !force {
			continue
		}
		ag := c.agentFor("")
		if ag == nil {
			continue
		}
		if err := ag.SetFirewall(ctx, st); err != nil {
			c.log().Warn("push security groups to agent", "err", err)
			last = ""
			continue
		}
		last = string(b)
	}
}

// firewallMember is what of a task's record the security-group state
// depends on: its address, and whether it is STOPPED.
func firewallMember(r *model.TaskRecord) string {
	if ecstypes.Deref(r.Task.LastStatus) == "STOPPED" {
		return "stopped"
	}
	if eni := ENIAttachment(&r.Task); eni != nil {
		return detail(eni, "privateIPv4Address")
	}
	return ""
}

// firewallState is every task not yet STOPPED with its groups and address,
// and the rules of those groups. With one host that is the host's state;
// with several, each host's share is its tasks and the members of groups
// they name.
func (c *Controller) firewallState(ctx context.Context) (agent.FirewallState, error) {
	st := agent.FirewallState{Tasks: []agent.FirewallTask{}, Groups: []agent.FirewallGroup{}}
	err := c.Store.View(ctx, func(tx state.Tx) error {
		st.Tasks, st.Groups = st.Tasks[:0], st.Groups[:0]
		type scoped struct{ account, region, id string }
		var groups []scoped
		seen := map[scoped]bool{}
		gateways := map[scoped]bool{} // VPCs with an internet gateway
		err := tx.Scan(model.KindTask, "", "", 0, func(key string, data []byte) error {
			var r model.TaskRecord
			if err := json.Unmarshal(data, &r); err != nil {
				return err
			}
			if r.Spec == nil || ecstypes.Deref(r.Task.LastStatus) == "STOPPED" {
				return nil
			}
			ft := agent.FirewallTask{TaskID: r.Spec.TaskID, VPCID: r.Spec.Network.VPCID, Groups: r.Spec.Network.SecurityGroupIDs}
			for _, a := range r.Task.Attachments {
				if ecstypes.Deref(a.Type_) == "ElasticNetworkInterface" {
					ft.IPv4 = detail(a, "privateIPv4Address")
				}
			}
			parts := strings.SplitN(key, "/", 3)
			if len(parts) < 3 {
				st.Tasks = append(st.Tasks, ft)
				return nil
			}
			if pub := r.Spec.Network.PublicIPv4; pub != "" {
				// Only a VPC with an internet gateway forwards it.
				k := scoped{parts[0], parts[1], ft.VPCID}
				igw, ok := gateways[k]
				if !ok {
					var err error
					if igw, err = ec2.HasInternetGateway(tx, k.account, k.region, k.id); err != nil {
						return err
					}
					gateways[k] = igw
				}
				if igw {
					ft.PublicIPv4 = pub
				}
			}
			st.Tasks = append(st.Tasks, ft)
			for _, g := range slices.Concat(ft.Groups, efsTargetGroups(r.Spec)) {
				k := scoped{parts[0], parts[1], g}
				if !seen[k] {
					seen[k] = true
					groups = append(groups, k)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range groups {
			g, err := ec2.LookupSecurityGroup(tx, k.account, k.region, k.id)
			if err != nil {
				return err
			}
			if g == nil {
				continue // deleted: its tasks keep only what other groups allow
			}
			st.Groups = append(st.Groups, agent.FirewallGroup{ID: g.ID, VPCID: g.VPCID, Ingress: firewallRules(g.Ingress), Egress: firewallRules(g.Egress)})
		}
		return nil
	})
	slices.SortFunc(st.Tasks, func(a, b agent.FirewallTask) int { return strings.Compare(a.TaskID, b.TaskID) })
	return st, err
}

func firewallRules(rs []ec2.Rule) []agent.FirewallRule {
	out := make([]agent.FirewallRule, 0, len(rs))
	for _, r := range rs {
		out = append(out, agent.FirewallRule{Protocol: r.Protocol, FromPort: r.FromPort, ToPort: r.ToPort, CIDRs: r.CIDRs, Groups: r.GroupIDs})
	}
	return out
}

// efsTargetGroups are the security groups of the EFS mount targets the
// task mounts: the agent serving them enforces their rules too.
func efsTargetGroups(spec *agent.TaskSpec) []string {
	var out []string
	for _, c := range spec.Containers {
		for _, m := range c.Mounts {
			if m.EFS != nil && m.EFS.MountTarget != nil {
				out = append(out, m.EFS.MountTarget.SecurityGroups...)
			}
		}
	}
	return out
}
