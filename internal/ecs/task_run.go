package ecs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/controller"
	"github.com/gantry-dev/gantry/internal/ec2"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/model"
	"github.com/gantry-dev/gantry/internal/state"
)

// Fargate's platform: the only version Gantry offers, whatever is asked.
const (
	platformVersion = "1.4.0"
	platformFamily  = "Linux"
)

func (s *Service) runTask(ctx context.Context, in *ecstypes.RunTaskRequest) (*tasksOut, error) {
	if err := checkRunTask(in); err != nil {
		return nil, err
	}
	sc := scopeOf(ctx)
	var recs []*model.TaskRecord
	var failures []*ecstypes.Failure
	replay := false
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		var err error
		recs, replay, err = replayRunTask(tx, sc, in)
		if err != nil || replay {
			return err
		}
		recs, failures, err = s.newTasks(tx, sc, in)
		if err != nil || in.ClientToken == nil {
			return err
		}
		return rememberRunTask(tx, sc, in, recs, s.now())
	})
	if err != nil {
		return nil, err
	}
	if s.Controller != nil && !replay {
		recs = s.Controller.Launch(ctx, recs)
	}
	out := &tasksOut{Tasks: []*ecstypes.Task{}, Failures: failures}
	for _, r := range recs {
		t := r.Task
		out.Tasks = append(out.Tasks, &t)
	}
	if out.Failures == nil {
		out.Failures = []*ecstypes.Failure{}
	}
	return out, nil
}

// runToken is what a RunTask clientToken started, so that a retried
// request (SDKs send a token with every RunTask) answers with the same tasks
// instead of starting more.
type runToken struct {
	TaskARNs  []string      `json:"taskArns"`
	CreatedAt ecstypes.Time `json:"createdAt"`
}

func runTokenKey(sc model.Scope, in *ecstypes.RunTaskRequest) string {
	return sc.Prefix() + model.ClusterName(in.Cluster) + "/" + *in.ClientToken
}

func replayRunTask(tx state.Tx, sc model.Scope, in *ecstypes.RunTaskRequest) ([]*model.TaskRecord, bool, error) {
	if in.ClientToken == nil {
		return nil, false, nil
	}
	var tok runToken
	ok, err := tx.Get(controller.KindRunToken, runTokenKey(sc, in), &tok)
	if err != nil || !ok {
		return nil, false, err
	}
	var recs []*model.TaskRecord
	for _, arn := range tok.TaskARNs {
		var rec model.TaskRecord
		found, err := tx.Get(model.KindTask, sc.TaskKey(model.ClusterName(in.Cluster), controller.TaskID(arn)), &rec)
		if err != nil {
			return nil, false, err
		}
		if found {
			recs = append(recs, &rec)
		}
	}
	return recs, true, nil
}

func rememberRunTask(tx state.Tx, sc model.Scope, in *ecstypes.RunTaskRequest, recs []*model.TaskRecord, now time.Time) error {
	if len(recs) == 0 {
		return nil
	}
	tok := runToken{CreatedAt: ecstypes.Time{Time: now}}
	for _, r := range recs {
		tok.TaskARNs = append(tok.TaskARNs, ecstypes.Deref(r.Task.TaskArn))
	}
	return tx.Put(controller.KindRunToken, runTokenKey(sc, in), tok)
}

// checkRunTask validates what needs no stored state.
func checkRunTask(in *ecstypes.RunTaskRequest) error {
	if tok := in.ClientToken; tok != nil {
		if len(*tok) < 1 || len(*tok) > 64 || strings.IndexFunc(*tok, func(r rune) bool { return r < 33 || r > 126 }) >= 0 {
			return awsapi.InvalidParameter("clientToken must be 1 to 64 characters in the range 33-126.")
		}
	}
	if strings.TrimSpace(ecstypes.Deref(in.TaskDefinition)) == "" {
		return awsapi.InvalidParameter("TaskDefinition can not be blank.")
	}
	if n := ecstypes.Deref(in.Count); in.Count != nil && (n < 1 || n > 10) {
		return awsapi.InvalidParameter("Count must be between 1 and 10.")
	}
	if len(ecstypes.Deref(in.StartedBy)) > 128 {
		return awsapi.InvalidParameter("startedBy must be at most 128 characters.")
	}
	if len(ecstypes.Deref(in.Group)) > 255 {
		return awsapi.InvalidParameter("Group must be at most 255 characters.")
	}
	if in.LaunchType != nil && len(in.CapacityProviderStrategy) > 0 {
		return awsapi.InvalidParameter("Specifying both a launch type and capacity provider strategy is not supported. Remove one and try again.")
	}
	if err := enumParam("launchType", in.LaunchType, "LaunchType"); err != nil {
		return err
	}
	if err := enumParam("propagateTags", in.PropagateTags, "PropagateTags"); err != nil {
		return err
	}
	if ecstypes.Deref(in.PropagateTags) == "SERVICE" {
		return awsapi.InvalidParameter("propagateTags SERVICE is only valid for tasks started by a service.")
	}
	if v := ecstypes.Deref(in.PlatformVersion); v != "" && v != "LATEST" && v != platformVersion {
		return awsapi.InvalidParameter("The specified platform version (%s) does not exist. Gantry supports LATEST and %s.", v, platformVersion)
	}
	if len(in.CapacityProviderStrategy) > 20 {
		return awsapi.InvalidParameter("capacityProviderStrategy can contain at most 20 items.")
	}
	bases := 0
	for _, item := range in.CapacityProviderStrategy {
		if item == nil || ecstypes.Deref(item.CapacityProvider) == "" {
			return awsapi.InvalidParameter("capacityProvider can not be blank.")
		}
		if w := ecstypes.Deref(item.Weight); w < 0 || w > 1000 {
			return awsapi.InvalidParameter("The weight for capacity provider %s must be between 0 and 1000.", *item.CapacityProvider)
		}
		if b := ecstypes.Deref(item.Base); b < 0 || b > 100000 {
			return awsapi.InvalidParameter("The base for capacity provider %s must be between 0 and 100000.", *item.CapacityProvider)
		}
		if ecstypes.Deref(item.Base) > 0 {
			bases++
		}
	}
	if bases > 1 {
		return awsapi.InvalidParameter("You can specify a base value for only one capacity provider in a capacity provider strategy.")
	}
	if nc := in.NetworkConfiguration; nc != nil && nc.AwsvpcConfiguration != nil {
		if err := enumParam("assignPublicIp", nc.AwsvpcConfiguration.AssignPublicIp, "AssignPublicIp"); err != nil {
			return err
		}
	}
	if ov := in.Overrides; ov != nil {
		for _, co := range ov.ContainerOverrides {
			if co == nil {
				continue
			}
			if ecstypes.Deref(co.Name) == "" && (co.Command != nil || co.Environment != nil || co.Cpu != nil || co.Memory != nil || co.MemoryReservation != nil) {
				return awsapi.InvalidParameter("Container override name can not be blank when the override is not empty.")
			}
			for _, kv := range co.Environment {
				if kv == nil || ecstypes.Deref(kv.Name) == "" {
					return awsapi.InvalidParameter("Environment variable name in container override for %s can not be blank.", ecstypes.Deref(co.Name))
				}
			}
			for field, v := range map[string]*int32{"cpu": co.Cpu, "memory": co.Memory, "memoryReservation": co.MemoryReservation} {
				if v != nil && *v < 0 {
					return awsapi.InvalidParameter("Container override %s for %s must not be negative.", field, ecstypes.Deref(co.Name))
				}
			}
		}
		if es := ov.EphemeralStorage; es != nil {
			if n := ecstypes.Deref(es.SizeInGiB); n < 21 || n > 200 {
				return awsapi.InvalidParameter("The ephemeral storage size must be between 21 and 200 GiB.")
			}
		}
	}
	return nil
}

func enumParam(field string, v *string, enum string) error {
	if v == nil || slices.Contains(ecstypes.Enums[enum], *v) {
		return nil
	}
	return awsapi.InvalidParameter("Invalid %s value '%s'. Valid values: %s.", field, *v, strings.Join(ecstypes.Enums[enum], ", "))
}

// taskCluster loads an ACTIVE cluster by name or ARN.
func taskCluster(tx state.Tx, sc model.Scope, ref *string) (*ecstypes.Cluster, error) {
	rec, err := LookupCluster(tx, sc, ref)
	if err != nil {
		return nil, err
	}
	return &rec.Cluster, nil
}

// placement is where one task runs: its capacity provider and subnet.
type placement struct {
	capacityProvider string
	subnet           *ec2.Subnet
}

// newTasks validates a RunTask request against the stored state and stores
// its tasks in PROVISIONING. Services reuse it to start their tasks.
func (s *Service) newTasks(tx state.Tx, sc model.Scope, in *ecstypes.RunTaskRequest) ([]*model.TaskRecord, []*ecstypes.Failure, error) {
	cluster, err := taskCluster(tx, sc, in.Cluster)
	if err != nil {
		return nil, nil, err
	}
	clusterName := ecstypes.Deref(cluster.ClusterName)
	td, err := model.GetTaskDefinition(tx, sc, ecstypes.Deref(in.TaskDefinition))
	if err != nil {
		return nil, nil, err
	}
	if td == nil {
		return nil, nil, awsapi.ClientException("TaskDefinition not found.")
	}
	if ecstypes.Deref(td.Status) != "ACTIVE" {
		return nil, nil, awsapi.ClientException("TaskDefinition is inactive")
	}

	count := int(ecstypes.Deref(in.Count))
	if in.Count == nil {
		count = 1
	}
	providers, launchType, err := capacityProviders(in, cluster, count)
	if err != nil {
		return nil, nil, err
	}
	if launchType != "FARGATE" {
		// Gantry has Fargate capacity only: no container instances to
		// place EC2, EXTERNAL or managed-instance tasks on.
		return nil, []*ecstypes.Failure{{Arn: cluster.ClusterArn, Reason: ecstypes.String("No Container Instances were found in your cluster.")}}, nil
	}
	if !slices.Contains(td.Compatibilities, "FARGATE") {
		return nil, nil, awsapi.InvalidParameter("Task definition does not support launch_type FARGATE.")
	}

	cpu, mem, err := taskSize(td, in.Overrides)
	if err != nil {
		return nil, nil, err
	}
	if err := checkContainerOverrides(td, in.Overrides); err != nil {
		return nil, nil, err
	}
	subnets, groups, err := taskNetwork(tx, sc, td, in.NetworkConfiguration)
	if err != nil {
		return nil, nil, err
	}
	taskRoleARN, _ := taskRoles(td, in.Overrides)
	efsVolumes, err := resolveEFS(tx, sc, td, subnets, taskRoleARN)
	if err != nil {
		return nil, nil, err
	}
	if err := validateTags(in.Tags); err != nil {
		return nil, nil, err
	}
	tags := slices.Clone(in.Tags)
	if ecstypes.Deref(in.PropagateTags) == "TASK_DEFINITION" {
		tdTags, err := ResourceTags(tx, ecstypes.Deref(td.TaskDefinitionArn))
		if err != nil {
			return nil, nil, err
		}
		tags = mergeTags(tags, tdTags)
	}
	if ecstypes.Deref(in.EnableECSManagedTags) {
		tags = append(tags, &ecstypes.Tag{Key: ecstypes.String("aws:ecs:clusterName"), Value: ecstypes.String(clusterName)})
	}

	ephemeral := int32(20)
	if td.EphemeralStorage != nil && td.EphemeralStorage.SizeInGiB != nil {
		ephemeral = *td.EphemeralStorage.SizeInGiB
	}
	if in.Overrides != nil && in.Overrides.EphemeralStorage != nil {
		ephemeral = *in.Overrides.EphemeralStorage.SizeInGiB
	}
	group := ecstypes.Deref(in.Group)
	if group == "" {
		group = "family:" + ecstypes.Deref(td.Family)
	}
	start := randInt(len(subnets))
	var recs []*model.TaskRecord
	for i := 0; i < count; i++ {
		p := placement{capacityProvider: providers[i], subnet: subnets[(start+i)%len(subnets)]}
		rec := s.newTask(sc, cluster, td, in, p, taskParams{cpu: cpu, mem: mem, ephemeral: ephemeral, group: group, groups: groups, tags: tags})
		if err := s.checkTaskRole(tx, rec); err != nil {
			return nil, nil, err
		}
		applyEFS(rec.Spec.Containers, efsVolumes)
		if rec.Spec.Network.PublicIPv4, err = ec2.AssignPublicIP(tx, in.NetworkConfiguration); err != nil {
			return nil, nil, err
		}
		if err := tx.Put(model.KindTask, sc.TaskKey(clusterName, controllerTaskID(rec)), rec); err != nil {
			return nil, nil, err
		}
		if len(tags) > 0 {
			// Stored directly: ECS's own aws: tags would not pass the
			// user-facing validation.
			if err := putStoredTags(tx, ecstypes.Deref(rec.Task.TaskArn), tags); err != nil {
				return nil, nil, err
			}
		}
		// RunTask answers with the task's tags, [] for none, as AWS does
		// (the stored task keeps them apart, for include=TAGS).
		rec.Task.Tags = append([]*ecstypes.Tag{}, tags...)
		recs = append(recs, rec)
	}
	return recs, nil, nil
}

// checkTaskRole refuses a task whose role ECS could not assume (missing,
// in another account, or not trusting ecs-tasks.amazonaws.com), as AWS's
// RunTask does, rather than starting a task that would get no
// credentials. Services' tasks meet it too: the service scheduler reports
// the refusal in the service's events. It is asked per task, once its ARN
// exists, for trust policies conditioned on aws:SourceArn.
func (s *Service) checkTaskRole(tx state.Tx, rec *model.TaskRecord) error {
	if s.TaskRoles == nil || rec.Spec.TaskRoleARN == "" {
		return nil
	}
	return s.TaskRoles(tx, rec.Spec.TaskARN, rec.Spec.TaskRoleARN)
}

type taskParams struct {
	cpu, mem  int64
	ephemeral int32
	group     string
	groups    []string
	tags      []*ecstypes.Tag
}

func controllerTaskID(rec *model.TaskRecord) string { return rec.Spec.TaskID }

// newTask builds one task record in PROVISIONING, with the agent's spec.
func (s *Service) newTask(sc model.Scope, cluster *ecstypes.Cluster, td *ecstypes.TaskDefinition, in *ecstypes.RunTaskRequest, p placement, tp taskParams) *model.TaskRecord {
	clusterName := ecstypes.Deref(cluster.ClusterName)
	id := randHex(16)
	arn := sc.TaskARN(clusterName, id)
	now := s.now()
	eniID := "eni-" + randHex(9)[:17]
	mac := randMAC()

	containers := containerSpecs(td, in.Overrides)
	spec := &agent.TaskSpec{
		TaskID:       id,
		TaskARN:      arn,
		Cluster:      clusterName,
		ClusterARN:   ecstypes.Deref(cluster.ClusterArn),
		Family:       ecstypes.Deref(td.Family),
		Revision:     ecstypes.Deref(td.Revision),
		CPU:          tp.cpu,
		MemoryMiB:    tp.mem,
		EphemeralGiB: tp.ephemeral,
		Network: agent.NetworkSpec{
			ENIID:      eniID,
			MACAddress: mac,
			SubnetID:   p.subnet.ID,
			SubnetCIDR: p.subnet.CIDR,
			Gateway:    p.subnet.Gateway,
			VPCID:      p.subnet.VPCID,

			SecurityGroupIDs: tp.groups,
		},
		Containers:       containers,
		AvailabilityZone: p.subnet.AvailabilityZone,
		Isolation:        clusterIsolation(cluster),
	}
	spec.TaskRoleARN, spec.ExecutionRoleARN = taskRoles(td, in.Overrides)
	if len(tp.tags) > 0 {
		spec.Tags = map[string]string{}
		for _, t := range tp.tags {
			spec.Tags[ecstypes.Deref(t.Key)] = ecstypes.Deref(t.Value)
		}
	}

	attachmentID := uuid.NewString()
	task := ecstypes.Task{
		Attachments: []*ecstypes.Attachment{{
			Id:     ecstypes.String(attachmentID),
			Type_:  ecstypes.String("ElasticNetworkInterface"),
			Status: ecstypes.String("PRECREATED"),
			Details: []*ecstypes.KeyValuePair{
				{Name: ecstypes.String("subnetId"), Value: ecstypes.String(p.subnet.ID)},
				{Name: ecstypes.String("networkInterfaceId"), Value: ecstypes.String(eniID)},
				{Name: ecstypes.String("macAddress"), Value: ecstypes.String(mac)},
			},
		}},
		Attributes: []*ecstypes.Attribute{
			{Name: ecstypes.String("ecs.cpu-architecture"), Value: ecstypes.String(cpuArchitecture())},
			{Name: ecstypes.String(attributeIsolation), Value: ecstypes.String(spec.Isolation)},
		},
		AvailabilityZone:        ecstypes.String(p.subnet.AvailabilityZone),
		ClusterArn:              cluster.ClusterArn,
		Cpu:                     ecstypes.String(strconv.FormatInt(tp.cpu, 10)),
		Memory:                  ecstypes.String(strconv.FormatInt(tp.mem, 10)),
		CreatedAt:               ecstypes.At(now),
		DesiredStatus:           ecstypes.String("RUNNING"),
		LastStatus:              ecstypes.String("PROVISIONING"),
		EnableExecuteCommand:    ecstypes.Bool(ecstypes.Deref(in.EnableExecuteCommand)),
		EphemeralStorage:        &ecstypes.EphemeralStorage{SizeInGiB: ecstypes.Int32(tp.ephemeral)},
		FargateEphemeralStorage: &ecstypes.TaskEphemeralStorage{SizeInGiB: ecstypes.Int32(tp.ephemeral)},
		Group:                   ecstypes.String(tp.group),
		HealthStatus:            ecstypes.String("UNKNOWN"),
		LaunchType:              ecstypes.String("FARGATE"),
		Overrides:               echoOverrides(td, in.Overrides),
		PlatformFamily:          ecstypes.String(platformFamily),
		PlatformVersion:         ecstypes.String(platformVersion),
		StartedBy:               in.StartedBy,
		TaskArn:                 ecstypes.String(arn),
		TaskDefinitionArn:       td.TaskDefinitionArn,
		Version:                 ecstypes.Int64(1),
	}
	if p.capacityProvider != "" {
		task.CapacityProviderName = ecstypes.String(p.capacityProvider)
	}
	for i, cs := range containers {
		containerARN := sc.ARN(fmt.Sprintf("container/%s/%s/%s", clusterName, id, uuid.NewString()))
		containers[i].ContainerARN = containerARN // spec.Containers shares the array
		c := &ecstypes.Container{
			ContainerArn:      ecstypes.String(containerARN),
			TaskArn:           ecstypes.String(arn),
			Name:              ecstypes.String(cs.Name),
			Image:             ecstypes.String(cs.Image),
			LastStatus:        ecstypes.String("PENDING"),
			Cpu:               ecstypes.String(strconv.FormatInt(cs.CPU, 10)),
			NetworkInterfaces: []*ecstypes.NetworkInterface{},
			HealthStatus:      ecstypes.String("UNKNOWN"),
		}
		if cs.MemoryMiB > 0 {
			c.Memory = ecstypes.String(strconv.FormatInt(cs.MemoryMiB, 10))
		}
		if cs.MemoryReservation > 0 {
			c.MemoryReservation = ecstypes.String(strconv.FormatInt(cs.MemoryReservation, 10))
		}
		task.Containers = append(task.Containers, c)
	}
	return &model.TaskRecord{
		Task: task,
		Host: s.placeHost(spec),
		Spec: spec,
	}
}

func (s *Service) placeHost(spec *agent.TaskSpec) string {
	if s.Controller == nil {
		return ""
	}
	return s.Controller.Place(spec)
}

// capacityProviders picks each task's capacity provider ("" for a plain
// launch type) and the launch type they amount to.
func capacityProviders(in *ecstypes.RunTaskRequest, cluster *ecstypes.Cluster, count int) ([]string, string, error) {
	out := make([]string, count)
	if in.LaunchType != nil {
		return out, *in.LaunchType, nil
	}
	strategy := in.CapacityProviderStrategy
	if len(strategy) == 0 {
		strategy = cluster.DefaultCapacityProviderStrategy
	}
	if len(strategy) == 0 {
		// AWS would fall back to EC2; Gantry only has Fargate capacity.
		return out, "FARGATE", nil
	}
	for _, item := range strategy {
		name := ecstypes.Deref(item.CapacityProvider)
		if name != "FARGATE" && name != "FARGATE_SPOT" {
			return nil, "", awsapi.InvalidParameter("The specified capacity provider strategy cannot contain a capacity provider that is not associated with the cluster. Associate the capacity provider with the cluster or specify a valid capacity provider and try again.")
		}
	}
	// The base goes first; the rest is spread in proportion to the weights.
	assigned := map[string]int{}
	i := 0
	for _, item := range strategy {
		for b := int32(0); b < ecstypes.Deref(item.Base) && i < count; b++ {
			out[i] = *item.CapacityProvider
			i++
		}
	}
	for ; i < count; i++ {
		best, bestScore := "", 0.0
		for _, item := range strategy {
			w := float64(ecstypes.Deref(item.Weight))
			if w <= 0 {
				continue
			}
			score := float64(assigned[*item.CapacityProvider]+1) / w
			if best == "" || score < bestScore {
				best, bestScore = *item.CapacityProvider, score
			}
		}
		if best == "" {
			best = *strategy[0].CapacityProvider
		}
		assigned[best]++
		out[i] = best
	}
	return out, "FARGATE", nil
}

// taskSize is the task's cpu and memory after overrides; the result must be
// one of Fargate's sizes.
func taskSize(td *ecstypes.TaskDefinition, ov *ecstypes.TaskOverride) (int64, int64, error) {
	cpuS, memS := ecstypes.Deref(td.Cpu), ecstypes.Deref(td.Memory)
	if ov != nil && ov.Cpu != nil {
		cpuS = *ov.Cpu
	}
	if ov != nil && ov.Memory != nil {
		memS = *ov.Memory
	}
	cpu, okC := parseUnits(cpuS, "vcpu")
	mem, okM := parseUnits(memS, "gb")
	if !okC || !okM || !fargateSizeValid(cpu, mem) {
		return 0, 0, awsapi.ClientException("No Fargate configuration exists for given values: %s CPU, %s memory. See the Amazon ECS documentation for the valid values.", cpuS, memS)
	}
	var containerMem int64
	for _, cd := range td.ContainerDefinitions {
		containerMem += int64(max(ecstypes.Deref(cd.Memory), ecstypes.Deref(cd.MemoryReservation)))
	}
	if containerMem > int64(mem) {
		return 0, 0, awsapi.ClientException("The 'memory' setting for the task (%d) is less than the sum of its containers' memory (%d).", mem, containerMem)
	}
	return int64(cpu), int64(mem), nil
}

func checkContainerOverrides(td *ecstypes.TaskDefinition, ov *ecstypes.TaskOverride) error {
	if ov == nil {
		return nil
	}
	for _, co := range ov.ContainerOverrides {
		if co == nil || co.Name == nil {
			continue
		}
		found := false
		for _, cd := range td.ContainerDefinitions {
			found = found || ecstypes.Deref(cd.Name) == *co.Name
		}
		if !found {
			return awsapi.InvalidParameter("Override for container named %s is not a container in the TaskDefinition.", *co.Name)
		}
	}
	return nil
}

// echoOverrides is the task's overrides as ECS shows them: what was asked,
// with an entry for every container.
func echoOverrides(td *ecstypes.TaskDefinition, ov *ecstypes.TaskOverride) *ecstypes.TaskOverride {
	out := &ecstypes.TaskOverride{}
	if ov != nil {
		c := *ov
		out = &c
		out.ContainerOverrides = nil
	}
	for _, cd := range td.ContainerDefinitions {
		co := &ecstypes.ContainerOverride{Name: cd.Name}
		if ov != nil {
			for _, o := range ov.ContainerOverrides {
				if o != nil && ecstypes.Deref(o.Name) == ecstypes.Deref(cd.Name) {
					co = o
				}
			}
		}
		out.ContainerOverrides = append(out.ContainerOverrides, co)
	}
	if out.InferenceAcceleratorOverrides == nil {
		out.InferenceAcceleratorOverrides = []*ecstypes.InferenceAcceleratorOverride{} // AWS shows it empty
	}
	return out
}

// taskNetwork resolves awsvpcConfiguration: the subnets to place ENIs in
// and the security groups (the VPC's default group when none is given).
func taskNetwork(tx state.Tx, sc model.Scope, td *ecstypes.TaskDefinition, nc *ecstypes.NetworkConfiguration) ([]*ec2.Subnet, []string, error) {
	if nc == nil || nc.AwsvpcConfiguration == nil {
		return nil, nil, awsapi.InvalidParameter("Network Configuration must be provided when networkMode 'awsvpc' is specified.")
	}
	cfg := nc.AwsvpcConfiguration
	if len(cfg.Subnets) == 0 {
		return nil, nil, awsapi.InvalidParameter("subnets can not be empty.")
	}
	if len(cfg.Subnets) > 16 {
		return nil, nil, awsapi.InvalidParameter("subnets can have at most 16 items.")
	}
	if len(cfg.SecurityGroups) > 5 {
		return nil, nil, awsapi.InvalidParameter("securityGroups can have at most 5 items.")
	}
	var subnets []*ec2.Subnet
	for _, id := range cfg.Subnets {
		sn, err := ec2.LookupSubnet(tx, sc.Account, sc.Region, id)
		if err != nil {
			return nil, nil, err
		}
		if sn == nil {
			return nil, nil, awsapi.InvalidParameter("Error retrieving subnet information for [%s]: The subnet ID '%s' does not exist (ErrorCode: InvalidSubnetID.NotFound)", id, id)
		}
		if len(subnets) > 0 && sn.VPCID != subnets[0].VPCID {
			return nil, nil, awsapi.InvalidParameter("Subnets must all be in the same VPC: %s is in %s, %s in %s.", subnets[0].ID, subnets[0].VPCID, sn.ID, sn.VPCID)
		}
		subnets = append(subnets, sn)
	}
	vpc := subnets[0].VPCID
	groups := slices.Clone(cfg.SecurityGroups)
	for _, id := range groups {
		g, err := ec2.LookupSecurityGroup(tx, sc.Account, sc.Region, id)
		if err != nil {
			return nil, nil, err
		}
		if g == nil {
			return nil, nil, awsapi.InvalidParameter("Error retrieving security group information for [%s]: The security group '%s' does not exist (ErrorCode: InvalidGroup.NotFound)", id, id)
		}
		if g.VPCID != vpc {
			return nil, nil, awsapi.InvalidParameter("Security group %s does not belong to VPC %s of the subnets.", id, vpc)
		}
	}
	if len(groups) == 0 {
		g, err := ec2.VPCDefaultSecurityGroup(tx, sc.Account, sc.Region, vpc)
		if err != nil {
			return nil, nil, err
		}
		if g != nil && g.VPCID == vpc {
			groups = []string{g.ID}
		}
	}
	return subnets, groups, nil
}

// mergeTags adds the tags of more whose keys tags does not have yet.
func mergeTags(tags, more []*ecstypes.Tag) []*ecstypes.Tag {
	for _, t := range more {
		if !slices.ContainsFunc(tags, func(x *ecstypes.Tag) bool { return ecstypes.Deref(x.Key) == ecstypes.Deref(t.Key) }) {
			tags = append(tags, t)
		}
	}
	return tags
}

func cpuArchitecture() string {
	if runtime.GOARCH == "arm64" {
		return "arm64"
	}
	return "x86_64"
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func randInt(n int) int {
	var b [1]byte
	rand.Read(b[:])
	return int(b[0]) % n
}

// randMAC makes a locally administered unicast MAC, as ENIs have.
func randMAC() string {
	b := make([]byte, 6)
	rand.Read(b)
	b[0] = b[0]&0xfc | 0x02
	return net.HardwareAddr(b).String()
}
