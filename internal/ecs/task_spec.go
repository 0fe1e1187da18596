package ecs

import (
	"path"
	"strconv"
	"time"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/ec2"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/efs"
	"github.com/gantry-dev/gantry/internal/iam"
	"github.com/gantry-dev/gantry/internal/model"
	"github.com/gantry-dev/gantry/internal/state"
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
			if kc := cd.LinuxParameters.Capabilities; kc != nil {
				cs.CapAdd, cs.CapDrop = kc.Add, kc.Drop
			}
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
		// Secrets travel as references; the agent reads their values when
		// the container starts (see agent.SecretSource).
		for _, sec := range cd.Secrets {
			cs.Secrets = append(cs.Secrets, agent.SecretRef{Name: ecstypes.Deref(sec.Name), ValueFrom: ecstypes.Deref(sec.ValueFrom)})
		}
		if rc := cd.RepositoryCredentials; rc != nil {
			cs.RepositoryCredentials = ecstypes.Deref(rc.CredentialsParameter)
		}
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

// resolveEFS resolves the task definition's efsVolumeConfiguration volumes
// for a task in the given subnets: the file system and access point must
// exist, the access point must belong to the file system, and the file
// system needs a mount target in the task's VPC, as on AWS (where a task
// without one fails to mount). Gantry refuses such a RunTask instead of
// starting a task that cannot mount its volume.
//
// The file system policy is evaluated here for the task's client (its
// task role when the volume says iam ENABLED, else anonymous), as EFS
// evaluates it when the client connects: see efsAccess.
func resolveEFS(tx state.Tx, sc model.Scope, td *ecstypes.TaskDefinition, subnets []*ec2.Subnet, taskRoleARN string) (map[string]*agent.EFSMount, error) {
	out := map[string]*agent.EFSMount{}
	for _, v := range td.Volumes {
		cfg := v.EfsVolumeConfiguration
		if cfg == nil {
			continue
		}
		fsID := ecstypes.Deref(cfg.FileSystemId)
		f, err := efs.LookupFileSystem(tx, sc.Account, sc.Region, fsID)
		if err != nil {
			return nil, err
		}
		if f == nil {
			return nil, awsapi.InvalidParameter("EFS file system '%s' of volume '%s' does not exist.", fsID, ecstypes.Deref(v.Name))
		}
		mts, err := efs.MountTargets(tx, sc.Account, sc.Region, f.ID)
		if err != nil {
			return nil, err
		}
		reachable := false
		for _, mt := range mts {
			for _, sn := range subnets {
				reachable = reachable || mt.VPCID == sn.VPCID
			}
		}
		if !reachable {
			return nil, awsapi.InvalidParameter("EFS file system '%s' of volume '%s' has no mount target in the task's VPC.", f.ID, ecstypes.Deref(v.Name))
		}
		m := &agent.EFSMount{FileSystemID: f.ID, Root: path.Clean("/" + ecstypes.Deref(cfg.RootDirectory))}
		for _, mt := range mts {
			for _, sn := range subnets {
				if mt.VPCID == sn.VPCID && (m.MountTarget == nil || mt.SubnetID == sn.ID) {
					m.MountTarget = &agent.EFSMountTarget{ID: mt.ID, IP: mt.IPAddress, VPCID: mt.VPCID, SecurityGroups: mt.SecurityGroups}
				}
			}
		}
		if ac := cfg.AuthorizationConfig; ac != nil && ecstypes.Deref(ac.AccessPointId) != "" {
			ap, err := efs.LookupAccessPoint(tx, sc.Account, sc.Region, *ac.AccessPointId)
			if err != nil {
				return nil, err
			}
			if ap == nil || ap.FileSystemID != f.ID {
				return nil, awsapi.InvalidParameter("EFS access point '%s' of volume '%s' does not exist for file system '%s'.", *ac.AccessPointId, ecstypes.Deref(v.Name), f.ID)
			}
			m.AccessPointID, m.Root = ap.ID, ap.Root()
			if rd := ap.RootDirectory; rd != nil && rd.CreationInfo != nil {
				ci := rd.CreationInfo
				mode, _ := strconv.ParseUint(ci.Permissions, 8, 32)
				m.Create = &agent.EFSCreation{UID: uint32(*ci.OwnerUid), GID: uint32(*ci.OwnerGid), Mode: uint32(mode)}
			}
			if u := ap.PosixUser; u != nil {
				m.User = &agent.EFSUser{UID: uint32(*u.Uid), GID: uint32(*u.Gid)}
				for _, g := range u.SecondaryGids {
					m.User.SecondaryGIDs = append(m.User.SecondaryGIDs, uint32(g))
				}
			}
		}
		if err := efsAccess(tx, sc, f, cfg, m, taskRoleARN); err != nil {
			return nil, err
		}
		out[ecstypes.Deref(v.Name)] = m
	}
	return out, nil
}

// efsAccess applies f's file system policy to the mount m: a client
// without ClientMount cannot mount (the task fails to start, as on AWS,
// rather than RunTask failing), one without ClientWrite mounts read-only,
// one without ClientRootAccess has root squashed. An access point's
// POSIX user overrides the client's identity, so squashing changes it
// only where it is root itself (EFS subjects such a user to
// ClientRootAccess too).
func efsAccess(tx state.Tx, sc model.Scope, f *efs.FileSystem, cfg *ecstypes.EFSVolumeConfiguration, m *agent.EFSMount, taskRoleARN string) error {
	c := efs.Client{Account: sc.Account, SecureTransport: ecstypes.Deref(cfg.TransitEncryption) == "ENABLED"}
	if ac := cfg.AuthorizationConfig; ac != nil && ecstypes.Deref(ac.Iam) == "ENABLED" && taskRoleARN != "" {
		ro, pols, err := iam.RolePoliciesTx(tx, taskRoleARN)
		if err != nil {
			return err
		}
		c.Principal, c.RolePolicies = taskRoleARN, pols
		if ro != nil {
			c.Principal = ro.ARN()
		}
	}
	if m.AccessPointID != "" {
		c.AccessPointARN = "arn:aws:elasticfilesystem:" + sc.Region + ":" + sc.Account + ":access-point/" + m.AccessPointID
	}
	acc, err := efs.DecideClientAccess(f.ARN, f.Policy, c)
	if err != nil {
		return err
	}
	if !acc.Mount {
		root := m.Root
		if m.AccessPointID != "" {
			root = "/" // mounted through the access point, whose root is the top
		}
		m.MountDenied = efs.DeniedMountMessage(f.ID, sc.Region, root, c.SecureTransport)
	}
	m.ReadOnly = !acc.Write
	if !acc.Root {
		if u := m.User; u != nil {
			squashed := &agent.EFSUser{UID: squashID(u.UID), GID: squashID(u.GID)}
			for _, g := range u.SecondaryGIDs {
				squashed.SecondaryGIDs = append(squashed.SecondaryGIDs, squashID(g))
			}
			m.User = squashed
		} else {
			m.RootSquash = true
		}
	}
	return nil
}

// squashID is NFS's root_squash: id 0 becomes the anonymous 65534.
func squashID(id uint32) uint32 {
	if id == 0 {
		return 65534
	}
	return id
}

// applyEFS marks the containers' mounts of EFS volumes.
func applyEFS(containers []agent.ContainerSpec, vols map[string]*agent.EFSMount) {
	for i := range containers {
		for j := range containers[i].Mounts {
			if m := vols[containers[i].Mounts[j].Volume]; m != nil {
				containers[i].Mounts[j].EFS = m
				// Without ClientWrite EFS mounts the volume read-only for
				// every container: writes fail with EROFS.
				containers[i].Mounts[j].ReadOnly = containers[i].Mounts[j].ReadOnly || m.ReadOnly
			}
		}
	}
}
