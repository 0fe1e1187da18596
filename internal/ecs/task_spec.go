package ecs

import (
	"time"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
)

// containerSpecs turns a task definition's containers, with RunTask's
// overrides applied, into what the agent runs.
func containerSpecs(td *ecstypes.TaskDefinition, ov *ecstypes.TaskOverride) []agent.ContainerSpec {
	overrides := map[string]*ecstypes.ContainerOverride{}
	if ov != nil {
		for _, co := range ov.ContainerOverrides {
			overrides[ecstypes.Deref(co.Name)] = co
		}
	}
	var out []agent.ContainerSpec
	for _, cd := range td.ContainerDefinitions {
		name := ecstypes.Deref(cd.Name)
		cs := agent.ContainerSpec{
			Name:              name,
			Image:             ecstypes.Deref(cd.Image),
			Essential:         cd.Essential == nil || *cd.Essential,
			EntryPoint:        cd.EntryPoint,
			Command:           cd.Command,
			WorkingDirectory:  ecstypes.Deref(cd.WorkingDirectory),
			User:              ecstypes.Deref(cd.User),
			ReadonlyRootfs:    ecstypes.Deref(cd.ReadonlyRootFilesystem),
			CPU:               int64(ecstypes.Deref(cd.Cpu)),
			MemoryMiB:         int64(ecstypes.Deref(cd.Memory)),
			MemoryReservation: int64(ecstypes.Deref(cd.MemoryReservation)),
			StopTimeout:       30 * time.Second,
			Hostname:          ecstypes.Deref(cd.Hostname),
		}
		if lc := cd.LogConfiguration; lc != nil {
			cs.LogConfig = &agent.LogConfig{Driver: ecstypes.Deref(lc.LogDriver), Options: lc.Options}
		}
		if cd.StopTimeout != nil {
			cs.StopTimeout = time.Duration(min(max(*cd.StopTimeout, 0), 120)) * time.Second
		}
		if cd.StartTimeout != nil {
			cs.StartTimeout = time.Duration(*cd.StartTimeout) * time.Second
		}
		if cd.LinuxParameters != nil {
			cs.InitProcess = ecstypes.Deref(cd.LinuxParameters.InitProcessEnabled)
		}
		env := map[string]string{}
		for _, kv := range cd.Environment {
			env[ecstypes.Deref(kv.Name)] = ecstypes.Deref(kv.Value)
		}
		if co := overrides[name]; co != nil {
			if co.Command != nil {
				cs.Command = co.Command
			}
			for _, kv := range co.Environment {
				env[ecstypes.Deref(kv.Name)] = ecstypes.Deref(kv.Value)
			}
			if co.Cpu != nil {
				cs.CPU = int64(*co.Cpu)
			}
			if co.Memory != nil {
				cs.MemoryMiB = int64(*co.Memory)
			}
			if co.MemoryReservation != nil {
				cs.MemoryReservation = int64(*co.MemoryReservation)
			}
		}
		if len(env) > 0 {
			cs.Environment = env
		}
		for _, u := range cd.Ulimits {
			cs.Ulimits = append(cs.Ulimits, agent.Ulimit{Name: ecstypes.Deref(u.Name), Soft: int64(ecstypes.Deref(u.SoftLimit)), Hard: int64(ecstypes.Deref(u.HardLimit))})
		}
		for _, d := range cd.DependsOn {
			cs.DependsOn = append(cs.DependsOn, agent.Dependency{Container: ecstypes.Deref(d.ContainerName), Condition: ecstypes.Deref(d.Condition)})
		}
		if hc := cd.HealthCheck; hc != nil && len(hc.Command) > 0 {
			cs.HealthCheck = &agent.HealthCheck{
				Command:     hc.Command,
				Interval:    seconds(hc.Interval, 30),
				Timeout:     seconds(hc.Timeout, 5),
				Retries:     int(ecstypes.Deref(hc.Retries)),
				StartPeriod: seconds(hc.StartPeriod, 0),
			}
			if hc.Retries == nil {
				cs.HealthCheck.Retries = 3
			}
		}
		cs.Mounts = containerMounts(td, name, false, map[string]bool{})
		out = append(out, cs)
	}
	return out
}

// containerMounts is a container's mountPoints followed by those it gets
// through volumesFrom, which include the source's own volumesFrom, as with
// Docker. readOnly on volumesFrom makes every mount it brings read-only.
func containerMounts(td *ecstypes.TaskDefinition, name string, readOnly bool, seen map[string]bool) []agent.Mount {
	if seen[name] {
		return nil // a cycle; validation names only other containers, not chains
	}
	seen[name] = true
	for _, cd := range td.ContainerDefinitions {
		if ecstypes.Deref(cd.Name) != name {
			continue
		}
		var out []agent.Mount
		for _, mp := range cd.MountPoints {
			out = append(out, agent.Mount{
				Volume:        ecstypes.Deref(mp.SourceVolume),
				ContainerPath: ecstypes.Deref(mp.ContainerPath),
				ReadOnly:      readOnly || ecstypes.Deref(mp.ReadOnly),
			})
		}
		for _, vf := range cd.VolumesFrom {
			out = append(out, containerMounts(td, ecstypes.Deref(vf.SourceContainer), readOnly || ecstypes.Deref(vf.ReadOnly), seen)...)
		}
		return out
	}
	return nil
}

func seconds(v *int32, def int32) time.Duration {
	if v == nil {
		return time.Duration(def) * time.Second
	}
	return time.Duration(*v) * time.Second
}
