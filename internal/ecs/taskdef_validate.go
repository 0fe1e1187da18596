package ecs

import (
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
)

// Limits ECS enforces on task definitions.
const (
	maxContainers     = 10
	maxNameLen        = 255
	maxStopTimeout    = 120 // seconds, on Fargate
	minContainerMemMB = 6   // the smallest memory limit Docker (and runc) accept
)

var nameRe = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// newTaskDefinition validates a RegisterTaskDefinition request as ECS does
// and returns the definition to store, with the defaults ECS fills in. It
// leaves the ARN, revision, status and timestamps to the caller.
func newTaskDefinition(in *ecstypes.RegisterTaskDefinitionRequest) (*ecstypes.TaskDefinition, error) {
	family := ecstypes.Deref(in.Family)
	switch {
	case family == "":
		return nil, awsapi.ClientException("Family can not be blank.")
	case len(family) > maxNameLen:
		return nil, awsapi.ClientException("Family name can not be longer than %d characters.", maxNameLen)
	case !nameRe.MatchString(family):
		return nil, awsapi.ClientException("Family contains invalid characters.")
	}
	if len(in.ContainerDefinitions) == 0 {
		return nil, awsapi.ClientException("Container list cannot be empty.")
	}
	if len(in.ContainerDefinitions) > maxContainers {
		return nil, awsapi.ClientException("Too many containers.")
	}
	td := &ecstypes.TaskDefinition{
		Family:                  in.Family,
		ContainerDefinitions:    in.ContainerDefinitions,
		EnableFaultInjection:    in.EnableFaultInjection,
		EphemeralStorage:        in.EphemeralStorage,
		ExecutionRoleArn:        in.ExecutionRoleArn,
		InferenceAccelerators:   in.InferenceAccelerators,
		IpcMode:                 in.IpcMode,
		NetworkMode:             in.NetworkMode,
		PidMode:                 in.PidMode,
		PlacementConstraints:    in.PlacementConstraints,
		ProxyConfiguration:      in.ProxyConfiguration,
		RequiresCompatibilities: in.RequiresCompatibilities,
		RuntimePlatform:         in.RuntimePlatform,
		TaskRoleArn:             in.TaskRoleArn,
		Volumes:                 in.Volumes,
	}
	if err := checkEnum("networkMode", td.NetworkMode, "NetworkMode"); err != nil {
		return nil, err
	}
	if err := checkEnum("ipcMode", td.IpcMode, "IpcMode"); err != nil {
		return nil, err
	}
	if err := checkEnum("pidMode", td.PidMode, "PidMode"); err != nil {
		return nil, err
	}
	for _, c := range td.RequiresCompatibilities {
		if !slices.Contains(ecstypes.Enums["Compatibility"], c) {
			return nil, awsapi.ClientException("Invalid requiresCompatibilities value '%s'. Valid values: %s.", c, strings.Join(ecstypes.Enums["Compatibility"], ", "))
		}
	}
	if rp := td.RuntimePlatform; rp != nil {
		if err := checkEnum("runtimePlatform.cpuArchitecture", rp.CpuArchitecture, "CPUArchitecture"); err != nil {
			return nil, err
		}
		if err := checkEnum("runtimePlatform.operatingSystemFamily", rp.OperatingSystemFamily, "OSFamily"); err != nil {
			return nil, err
		}
	}

	// Task size: normalised to CPU units and MiB, as ECS answers it.
	taskCPU, taskMem := 0, 0
	if td.Cpu = in.Cpu; td.Cpu != nil {
		n, ok := parseUnits(*td.Cpu, "vcpu")
		if !ok {
			return nil, awsapi.ClientException("Invalid 'cpu' setting for task.")
		}
		taskCPU, td.Cpu = n, ecstypes.String(strconv.Itoa(n))
	}
	if td.Memory = in.Memory; td.Memory != nil {
		n, ok := parseUnits(*td.Memory, "gb")
		if !ok {
			return nil, awsapi.ClientException("Invalid 'memory' setting for task.")
		}
		taskMem, td.Memory = n, ecstypes.String(strconv.Itoa(n))
	}

	// ECS judges a Fargate request's task size before its containers.
	fargate := slices.Contains(td.RequiresCompatibilities, "FARGATE")
	if err := checkFargateSize(td, taskCPU, taskMem); fargate && err != nil {
		return nil, err
	}

	volumes := map[string]bool{}
	for _, v := range td.Volumes {
		if v == nil {
			return nil, awsapi.ClientException("Volume can not be null.")
		}
		name := ecstypes.Deref(v.Name)
		switch {
		case name == "":
			return nil, awsapi.ClientException("Volume.name should not be null or empty.")
		case len(name) > maxNameLen || !nameRe.MatchString(name):
			return nil, awsapi.ClientException("Volume.name contains invalid characters.")
		case volumes[name]:
			return nil, awsapi.ClientException("Duplicate volume name '%s'.", name)
		}
		volumes[name] = true
		if err := checkEFSVolume(name, v.EfsVolumeConfiguration); err != nil {
			return nil, err
		}
		// A volume with no other configuration is a bind mount in the task's
		// storage; ECS shows it with an empty host block.
		if v.Host == nil && v.DockerVolumeConfiguration == nil && v.EfsVolumeConfiguration == nil &&
			v.FsxWindowsFileServerVolumeConfiguration == nil && v.S3filesVolumeConfiguration == nil &&
			!ecstypes.Deref(v.ConfiguredAtLaunch) {
			v.Host = &ecstypes.HostVolumeProperties{}
		}
	}

	names := map[string]*ecstypes.ContainerDefinition{}
	for _, c := range td.ContainerDefinitions {
		if c == nil {
			return nil, awsapi.ClientException("Container definition can not be null.")
		}
		name := ecstypes.Deref(c.Name)
		switch {
		case name == "":
			return nil, awsapi.ClientException("Container.name should not be null or empty.")
		case len(name) > maxNameLen || !nameRe.MatchString(name):
			return nil, awsapi.ClientException("Container.name contains invalid characters.")
		case names[name] != nil:
			return nil, awsapi.ClientException("Duplicate container name '%s'. Container names must be unique within a task definition.", name)
		}
		names[name] = c
	}

	mode := ecstypes.Deref(td.NetworkMode)
	essential, cpuSum, reservationSum := false, 0, 0
	for _, c := range td.ContainerDefinitions {
		if err := checkContainer(c, mode, taskMem, names, volumes); err != nil {
			return nil, err
		}
		if ecstypes.Deref(c.Essential) {
			essential = true
		}
		cpuSum += int(*c.Cpu)
		if c.MemoryReservation != nil {
			reservationSum += int(*c.MemoryReservation)
		} else if c.Memory != nil {
			reservationSum += int(*c.Memory)
		}
	}
	if !essential {
		return nil, awsapi.ClientException("Task definition must have at least one essential container.")
	}
	if taskCPU > 0 && cpuSum > taskCPU {
		return nil, awsapi.ClientException("The sum of all container 'cpu' values cannot be greater than the value of the task 'cpu'.")
	}
	if taskMem > 0 && reservationSum > taskMem {
		return nil, awsapi.ClientException("The sum of all container 'memoryReservation' values cannot be greater than the value of the task 'memory'.")
	}
	if es := td.EphemeralStorage; es != nil {
		if n := ecstypes.Deref(es.SizeInGiB); n < 21 || n > 200 {
			return nil, awsapi.ClientException("Invalid 'ephemeralStorage.sizeInGiB' setting for task. The value must be between 21 and 200 GiB.")
		}
	}

	fargateErr := checkFargate(td, taskCPU, taskMem)
	if fargate && fargateErr != nil {
		return nil, fargateErr
	}
	td.Compatibilities = compatibilities(td, fargateErr == nil)
	td.RequiresAttributes = requiredAttributes(td)
	return td, nil
}

func checkEnum(field string, v *string, enum string) error {
	if v == nil || slices.Contains(ecstypes.Enums[enum], *v) {
		return nil
	}
	return awsapi.ClientException("Invalid '%s' value '%s'. Valid values: %s.", field, *v, strings.Join(ecstypes.Enums[enum], ", "))
}

// checkContainer validates one container and fills in ECS's defaults.
func checkContainer(c *ecstypes.ContainerDefinition, mode string, taskMem int, names map[string]*ecstypes.ContainerDefinition, volumes map[string]bool) error {
	name := *c.Name
	if strings.TrimSpace(ecstypes.Deref(c.Image)) == "" {
		return awsapi.ClientException("Container.image should not be null or empty.")
	}
	if c.Essential == nil {
		c.Essential = ecstypes.Bool(true)
	}
	if c.Cpu == nil {
		c.Cpu = ecstypes.Int32(0)
	} else if *c.Cpu < 0 {
		return awsapi.ClientException("Invalid 'cpu' setting for container '%s'.", name)
	}

	mem, res := c.Memory, c.MemoryReservation
	if mem == nil && res == nil && taskMem == 0 {
		return awsapi.ClientException("Invalid setting for container '%s'. At least one of 'memory' or 'memoryReservation' must be specified.", name)
	}
	if mem != nil && *mem < minContainerMemMB {
		return awsapi.ClientException("Invalid 'memory' setting for container '%s'. The memory limit must be at least %d MiB.", name, minContainerMemMB)
	}
	if res != nil && *res < minContainerMemMB {
		return awsapi.ClientException("Invalid 'memoryReservation' setting for container '%s'. The memory reservation must be at least %d MiB.", name, minContainerMemMB)
	}
	if mem != nil && res != nil && *res > *mem {
		return awsapi.ClientException("Invalid 'memory' setting for container '%s'. The 'memory' value must be greater than or equal to the 'memoryReservation' value.", name)
	}
	if taskMem > 0 && mem != nil && int(*mem) > taskMem {
		return awsapi.ClientException("The 'memory' setting for container '%s' is greater than for the task.", name)
	}
	if taskMem > 0 && res != nil && int(*res) > taskMem {
		return awsapi.ClientException("The 'memoryReservation' setting for container '%s' is greater than for the task.", name)
	}

	for _, pm := range c.PortMappings {
		if pm == nil {
			return awsapi.ClientException("Invalid 'portMappings' setting for container '%s'.", name)
		}
		if pm.ContainerPortRange != nil {
			if pm.ContainerPort != nil || pm.HostPort != nil || !validPortRange(*pm.ContainerPortRange) {
				return awsapi.ClientException("Invalid 'containerPortRange' setting for container '%s'.", name)
			}
		} else if p := ecstypes.Deref(pm.ContainerPort); p < 1 || p > 65535 {
			return awsapi.ClientException("Invalid 'containerPort' setting for container '%s'.", name)
		}
		if pm.HostPort != nil && (*pm.HostPort < 0 || *pm.HostPort > 65535) {
			return awsapi.ClientException("Invalid 'hostPort' setting for container '%s'.", name)
		}
		if pm.Protocol == nil {
			pm.Protocol = ecstypes.String("tcp")
		} else if !slices.Contains(ecstypes.Enums["TransportProtocol"], *pm.Protocol) {
			return awsapi.ClientException("Invalid 'protocol' setting for container '%s'. Valid values: tcp, udp.", name)
		}
		if err := checkEnum("appProtocol", pm.AppProtocol, "ApplicationProtocol"); err != nil {
			return err
		}
		if pm.ContainerPort == nil {
			continue
		}
		switch mode {
		case "awsvpc", "host":
			// The task owns its network namespace: a host port can only be
			// the container port, and ECS records it that way.
			if pm.HostPort != nil && *pm.HostPort != 0 && *pm.HostPort != *pm.ContainerPort {
				if mode == "awsvpc" {
					return awsapi.ClientException("When networkMode=awsvpc, the host ports and container ports in port mappings must match.")
				}
				return awsapi.ClientException("When networkMode=host, the host ports and container ports in port mappings must match.")
			}
			pm.HostPort = pm.ContainerPort
		case "none":
			return awsapi.ClientException("Port mappings are not supported when networkMode=none.")
		default:
			if pm.HostPort == nil {
				pm.HostPort = ecstypes.Int32(0)
			}
		}
	}

	if len(c.Links) > 0 {
		if mode == "awsvpc" {
			return awsapi.ClientException("Links are not supported when networkMode=awsvpc.")
		}
		for _, l := range c.Links {
			target, _, _ := strings.Cut(l, ":")
			if names[target] == nil || target == name {
				return awsapi.ClientException("Invalid link '%s' for container '%s'. Links must name another container in the task definition.", l, name)
			}
		}
	}

	for _, mp := range c.MountPoints {
		if mp == nil || ecstypes.Deref(mp.ContainerPath) == "" {
			return awsapi.ClientException("Invalid 'mountPoints' setting for container '%s'. containerPath should not be null or empty.", name)
		}
		if !volumes[ecstypes.Deref(mp.SourceVolume)] {
			return awsapi.ClientException("Invalid 'mountPoints' setting for container '%s'. sourceVolume '%s' is not defined in the task definition's volumes.", name, ecstypes.Deref(mp.SourceVolume))
		}
	}
	for _, vf := range c.VolumesFrom {
		if vf == nil || names[ecstypes.Deref(vf.SourceContainer)] == nil || ecstypes.Deref(vf.SourceContainer) == name {
			return awsapi.ClientException("Invalid 'volumesFrom' setting for container '%s'. sourceContainer must name another container in the task definition.", name)
		}
	}

	for _, d := range c.DependsOn {
		if d == nil {
			return awsapi.ClientException("Invalid 'dependsOn' setting for container '%s'.", name)
		}
		target := names[ecstypes.Deref(d.ContainerName)]
		if target == nil || target == c {
			return awsapi.ClientException("Invalid 'dependsOn' setting for container '%s'. Container '%s' does not exist in the task definition.", name, ecstypes.Deref(d.ContainerName))
		}
		cond := ecstypes.Deref(d.Condition)
		if !slices.Contains(ecstypes.Enums["ContainerCondition"], cond) {
			return awsapi.ClientException("Invalid 'dependsOn' setting for container '%s'. Condition must be one of START, COMPLETE, SUCCESS, HEALTHY.", name)
		}
		if cond == "HEALTHY" && target.HealthCheck == nil {
			return awsapi.ClientException("Invalid 'dependsOn' setting for container '%s'. Dependency condition HEALTHY requires container '%s' to have a health check.", name, *target.Name)
		}
	}

	if hc := c.HealthCheck; hc != nil {
		if len(hc.Command) == 0 {
			return awsapi.ClientException("Invalid 'healthCheck' setting for container '%s'. The command must not be empty.", name)
		}
		hc.Interval = defaultInt(hc.Interval, 30)
		hc.Timeout = defaultInt(hc.Timeout, 5)
		hc.Retries = defaultInt(hc.Retries, 3)
		for _, r := range []struct {
			field    string
			v        *int32
			min, max int32
		}{
			{"interval", hc.Interval, 5, 300},
			{"timeout", hc.Timeout, 2, 120},
			{"retries", hc.Retries, 1, 10},
			{"startPeriod", hc.StartPeriod, 0, 300},
		} {
			if r.v != nil && (*r.v < r.min || *r.v > r.max) {
				return awsapi.ClientException("Invalid 'healthCheck' setting for container '%s'. '%s' must be between %d and %d.", name, r.field, r.min, r.max)
			}
		}
	}

	if c.StopTimeout != nil && *c.StopTimeout < 0 {
		return awsapi.ClientException("Invalid 'stopTimeout' setting for container '%s'.", name)
	}
	if c.StartTimeout != nil && *c.StartTimeout < 0 {
		return awsapi.ClientException("Invalid 'startTimeout' setting for container '%s'.", name)
	}
	for _, u := range c.Ulimits {
		if u == nil || !slices.Contains(ecstypes.Enums["UlimitName"], ecstypes.Deref(u.Name)) {
			n := ""
			if u != nil {
				n = ecstypes.Deref(u.Name)
			}
			return awsapi.ClientException("Invalid 'ulimits' setting for container '%s'. Invalid ulimit name '%s'.", name, n)
		}
		if u.SoftLimit == nil || u.HardLimit == nil || *u.SoftLimit > *u.HardLimit {
			return awsapi.ClientException("Invalid 'ulimits' setting for container '%s'. The soft limit of ulimit '%s' must be set and not exceed its hard limit.", name, *u.Name)
		}
	}
	for _, kv := range c.Environment {
		if kv == nil || ecstypes.Deref(kv.Name) == "" {
			return awsapi.ClientException("Invalid 'environment' setting for container '%s'. Environment variable names should not be null or empty.", name)
		}
	}
	for _, s := range c.Secrets {
		if s == nil || ecstypes.Deref(s.Name) == "" || ecstypes.Deref(s.ValueFrom) == "" {
			return awsapi.ClientException("Invalid 'secrets' setting for container '%s'. Secrets must have a name and a valueFrom.", name)
		}
	}
	if lc := c.LogConfiguration; lc != nil {
		if err := checkEnum("logConfiguration.logDriver", lc.LogDriver, "LogDriver"); err != nil {
			return err
		}
		if lc.LogDriver == nil {
			return awsapi.ClientException("Invalid 'logConfiguration' setting for container '%s'. logDriver should not be null or empty.", name)
		}
	}
	if rp := c.RestartPolicy; rp != nil {
		if rp.Enabled == nil {
			return awsapi.ClientException("Invalid 'restartPolicy' setting for container '%s'. 'enabled' must be specified.", name)
		}
		if p := rp.RestartAttemptPeriod; p != nil && (*p < 60 || *p > 1800) {
			return awsapi.ClientException("Invalid 'restartPolicy' setting for container '%s'. 'restartAttemptPeriod' must be between 60 and 1800.", name)
		}
		if len(rp.IgnoredExitCodes) > 50 {
			return awsapi.ClientException("Invalid 'restartPolicy' setting for container '%s'. At most 50 'ignoredExitCodes' can be given.", name)
		}
	}
	if err := checkEnum("versionConsistency", c.VersionConsistency, "VersionConsistency"); err != nil {
		return err
	}
	return nil
}

func defaultInt(p *int32, v int32) *int32 {
	if p == nil {
		return ecstypes.Int32(v)
	}
	return p
}

func validPortRange(r string) bool {
	lo, hi, ok := strings.Cut(r, "-")
	a, err1 := strconv.Atoi(lo)
	b, err2 := strconv.Atoi(hi)
	return ok && err1 == nil && err2 == nil && a >= 1 && a < b && b <= 65535
}

// checkFargateSize checks the task-level network mode and size Fargate needs.
func checkFargateSize(td *ecstypes.TaskDefinition, cpu, mem int) error {
	if ecstypes.Deref(td.NetworkMode) != "awsvpc" {
		return awsapi.ClientException("Fargate only supports network mode \u2018awsvpc\u2019.")
	}
	if td.Cpu == nil {
		return awsapi.ClientException("Fargate requires that 'cpu' be defined at the task level.")
	}
	if td.Memory == nil {
		return awsapi.ClientException("Fargate requires that 'memory' be defined at the task level.")
	}
	if !fargateSizeValid(cpu, mem) {
		return awsapi.ClientException("No Fargate configuration exists for given values: %d CPU, %d memory. See the Amazon ECS documentation for the valid values.", cpu, mem)
	}
	return nil
}

// checkFargate returns why td cannot run on Fargate, in ECS's words, or nil.
func checkFargate(td *ecstypes.TaskDefinition, cpu, mem int) error {
	if err := checkFargateSize(td, cpu, mem); err != nil {
		return err
	}
	if td.IpcMode != nil {
		return awsapi.ClientException("Tasks using the Fargate launch type do not support ipcMode.")
	}
	if ecstypes.Deref(td.PidMode) == "host" {
		return awsapi.ClientException("Tasks using the Fargate launch type do not support pidMode 'host'.")
	}
	if len(td.PlacementConstraints) > 0 {
		return awsapi.ClientException("Tasks using the Fargate launch type do not support placementConstraints.")
	}
	if len(td.InferenceAccelerators) > 0 {
		return awsapi.ClientException("Tasks using the Fargate launch type do not support inferenceAccelerators.")
	}
	for _, v := range td.Volumes {
		if v.Host != nil && v.Host.SourcePath != nil {
			return awsapi.ClientException("Fargate compatible task definitions do not support sourcePath")
		}
		if v.DockerVolumeConfiguration != nil {
			return awsapi.ClientException("Fargate compatible task definitions do not support dockerVolumeConfiguration")
		}
		if v.FsxWindowsFileServerVolumeConfiguration != nil {
			return awsapi.ClientException("Fargate compatible task definitions do not support fsxWindowsFileServerVolumeConfiguration")
		}
	}
	hasRole := ecstypes.Deref(td.ExecutionRoleArn) != ""
	for _, c := range td.ContainerDefinitions {
		name := *c.Name
		unsupported := func(param string) error {
			return awsapi.ClientException("Fargate compatible task definitions do not support %s (container '%s').", param, name)
		}
		switch {
		case ecstypes.Deref(c.Privileged):
			return unsupported("privileged")
		case len(c.DockerSecurityOptions) > 0:
			return unsupported("dockerSecurityOptions")
		case len(c.ExtraHosts) > 0:
			return unsupported("extraHosts")
		case c.Hostname != nil:
			return unsupported("hostname")
		case len(c.DnsServers) > 0:
			return unsupported("dnsServers")
		case len(c.DnsSearchDomains) > 0:
			return unsupported("dnsSearchDomains")
		case c.DisableNetworking != nil:
			return unsupported("disableNetworking")
		case c.StopTimeout != nil && *c.StopTimeout > maxStopTimeout:
			return awsapi.ClientException("Invalid 'stopTimeout' setting for container '%s'. Fargate supports a maximum stopTimeout of %d seconds.", name, maxStopTimeout)
		}
		if lp := c.LinuxParameters; lp != nil {
			switch {
			case len(lp.Devices) > 0:
				return unsupported("linuxParameters.devices")
			case len(lp.Tmpfs) > 0:
				return unsupported("linuxParameters.tmpfs")
			case lp.SharedMemorySize != nil:
				return unsupported("linuxParameters.sharedMemorySize")
			case lp.MaxSwap != nil:
				return unsupported("linuxParameters.maxSwap")
			case lp.Swappiness != nil:
				return unsupported("linuxParameters.swappiness")
			}
			if lp.Capabilities != nil {
				// Any capability may be dropped; SYS_PTRACE is the only one
				// Fargate adds (the wording is the API reference's).
				for _, cap := range lp.Capabilities.Add {
					if cap != "SYS_PTRACE" {
						return awsapi.ClientException("Tasks launched on Fargate only support adding the SYS_PTRACE kernel capability.")
					}
				}
				for _, cap := range lp.Capabilities.Drop {
					if !knownCapability(cap) {
						return awsapi.ClientException("Invalid 'linuxParameters.capabilities.drop' setting for container '%s': unknown capability '%s'.", name, cap)
					}
				}
			}
		}
		if lc := c.LogConfiguration; lc != nil {
			switch d := ecstypes.Deref(lc.LogDriver); d {
			case "awslogs", "splunk", "awsfirelens":
				if d == "awslogs" && !hasRole {
					return awsapi.ClientException("Fargate requires task definition to have execution role ARN to support log driver awslogs.")
				}
			default:
				return awsapi.ClientException("Fargate does not support log driver %s (container '%s'). Supported log drivers: awslogs, splunk, awsfirelens.", d, name)
			}
		}
		if isECRImage(ecstypes.Deref(c.Image)) && !hasRole {
			return awsapi.ClientException("Fargate requires task definition to have execution role ARN to support ECR images.")
		}
		if len(c.Secrets) > 0 && !hasRole {
			return awsapi.ClientException("Fargate requires task definition to have execution role ARN to support secrets.")
		}
		if c.RepositoryCredentials != nil && !hasRole {
			return awsapi.ClientException("Private repository authentication requires that the task definition specify a value for executionRoleArn.")
		}
	}
	return nil
}

func isECRImage(image string) bool {
	host, _, _ := strings.Cut(image, "/")
	return strings.Contains(host, ".dkr.ecr.") && strings.Contains(host, ".amazonaws.com")
}

// compatibilities lists the launch types td validated against, as ECS records
// them: EXTERNAL needs a host-managed network, Fargate its own rules.
func compatibilities(td *ecstypes.TaskDefinition, fargate bool) []string {
	var out []string
	if ecstypes.Deref(td.NetworkMode) != "awsvpc" {
		out = append(out, "EXTERNAL")
	}
	out = append(out, "EC2")
	if fargate {
		out = append(out, "FARGATE")
	}
	return out
}

// requiredAttributes are the container instance capabilities td needs, as
// ECS derives them from the features it uses.
func requiredAttributes(td *ecstypes.TaskDefinition) []*ecstypes.Attribute {
	var names []string
	add := func(n ...string) {
		for _, s := range n {
			if !slices.Contains(names, s) {
				names = append(names, s)
			}
		}
	}
	const api = "com.amazonaws.ecs.capability.docker-remote-api."
	add(api + "1.18")
	if ecstypes.Deref(td.NetworkMode) == "awsvpc" {
		add("ecs.capability.task-eni")
	}
	if td.TaskRoleArn != nil {
		add("com.amazonaws.ecs.capability.task-iam-role")
	}
	hasRole := td.ExecutionRoleArn != nil
	for _, c := range td.ContainerDefinitions {
		if c.MemoryReservation != nil {
			add(api + "1.21")
		}
		if c.HealthCheck != nil {
			add("ecs.capability.container-health-check", api+"1.24")
		}
		if len(c.DependsOn) > 0 || c.StartTimeout != nil || c.StopTimeout != nil {
			add("ecs.capability.container-ordering")
		}
		if lc := c.LogConfiguration; lc != nil && lc.LogDriver != nil {
			add("com.amazonaws.ecs.capability.logging-driver." + *lc.LogDriver)
			if *lc.LogDriver == "awslogs" {
				add(api + "1.19")
				if hasRole {
					add("ecs.capability.execution-role-awslogs")
				}
			}
		}
		if hasRole && isECRImage(ecstypes.Deref(c.Image)) {
			add("com.amazonaws.ecs.capability.ecr-auth", "ecs.capability.execution-role-ecr-pull")
		}
		if c.RepositoryCredentials != nil {
			add("com.amazonaws.ecs.capability.private-registry-authentication.secretsmanager")
		}
		for _, s := range c.Secrets {
			if strings.Contains(ecstypes.Deref(s.ValueFrom), ":secretsmanager:") {
				add("ecs.capability.secrets.asm.environment-variables")
			} else {
				add("ecs.capability.secrets.ssm.environment-variables")
			}
		}
		if len(c.EnvironmentFiles) > 0 {
			add("ecs.capability.env-files.s3")
		}
		if c.FirelensConfiguration != nil {
			add("ecs.capability.firelens." + ecstypes.Deref(c.FirelensConfiguration.Type_))
		}
	}
	for _, v := range td.Volumes {
		if v.EfsVolumeConfiguration != nil {
			add("ecs.capability.efsAuth", "ecs.capability.efs", api+"1.25")
		}
	}
	out := make([]*ecstypes.Attribute, len(names))
	for i, n := range names {
		out[i] = &ecstypes.Attribute{Name: ecstypes.String(n)}
	}
	return out
}

// checkEFSVolume validates an efsVolumeConfiguration as ECS does when the
// task definition is registered.
func checkEFSVolume(name string, cfg *ecstypes.EFSVolumeConfiguration) error {
	if cfg == nil {
		return nil
	}
	fsID := ecstypes.Deref(cfg.FileSystemId)
	if fsID == "" {
		return awsapi.ClientException("Volume '%s': efsVolumeConfiguration.fileSystemId must be specified.", name)
	}
	if !efsIDRe.MatchString(fsID) {
		return awsapi.ClientException("Volume '%s': invalid efsVolumeConfiguration.fileSystemId '%s'.", name, fsID)
	}
	te := ecstypes.Deref(cfg.TransitEncryption)
	if te != "" && te != "ENABLED" && te != "DISABLED" {
		return awsapi.ClientException("Volume '%s': transitEncryption must be ENABLED or DISABLED.", name)
	}
	if p := cfg.TransitEncryptionPort; p != nil && (*p < 1 || *p > 65535) {
		return awsapi.ClientException("Volume '%s': transitEncryptionPort must be between 1 and 65535.", name)
	}
	root := ecstypes.Deref(cfg.RootDirectory)
	if len(root) > 255 || strings.Contains(root, "\x00") || slices.Contains(strings.Split(root, "/"), "..") {
		return awsapi.ClientException("Volume '%s': invalid efsVolumeConfiguration.rootDirectory '%s'.", name, root)
	}
	ac := cfg.AuthorizationConfig
	if ac == nil {
		return nil
	}
	iam := ecstypes.Deref(ac.Iam)
	if iam != "" && iam != "ENABLED" && iam != "DISABLED" {
		return awsapi.ClientException("Volume '%s': authorizationConfig.iam must be ENABLED or DISABLED.", name)
	}
	ap := ecstypes.Deref(ac.AccessPointId)
	if ap != "" && !efsAPRe.MatchString(ap) {
		return awsapi.ClientException("Volume '%s': invalid authorizationConfig.accessPointId '%s'.", name, ap)
	}
	if (iam == "ENABLED" || ap != "") && te != "ENABLED" {
		return awsapi.ClientException("Volume '%s': transitEncryption must be ENABLED when an access point or IAM authorization is used.", name)
	}
	if ap != "" && root != "" && root != "/" {
		return awsapi.ClientException("Volume '%s': rootDirectory must be omitted or '/' when an access point is used; the access point's root directory applies.", name)
	}
	return nil
}

var (
	efsIDRe = regexp.MustCompile(`^fs-[0-9a-f]{8,40}$`)
	efsAPRe = regexp.MustCompile(`^fsap-[0-9a-f]{8,40}$`)
)

// knownCapability is a name KernelCapabilities documents as valid.
func knownCapability(c string) bool {
	switch c {
	case "ALL", "AUDIT_CONTROL", "AUDIT_WRITE", "BLOCK_SUSPEND", "CHOWN", "DAC_OVERRIDE",
		"DAC_READ_SEARCH", "FOWNER", "FSETID", "IPC_LOCK", "IPC_OWNER", "KILL", "LEASE",
		"LINUX_IMMUTABLE", "MAC_ADMIN", "MAC_OVERRIDE", "MKNOD", "NET_ADMIN", "NET_BIND_SERVICE",
		"NET_BROADCAST", "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_ADMIN",
		"SYS_BOOT", "SYS_CHROOT", "SYS_MODULE", "SYS_NICE", "SYS_PACCT", "SYS_PTRACE",
		"SYS_RAWIO", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "SYSLOG", "WAKE_ALARM":
		return true
	}
	return false
}
