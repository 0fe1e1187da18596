package metadata

import (
	"cmp"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// The shapes below are the endpoint's JSON as AWS documents it for Fargate
// (field names are AWS's, including their capitalisation).

type ContainerResponse struct {
	DockerID      string            `json:"DockerId"`
	Name          string            `json:"Name"`
	DockerName    string            `json:"DockerName"`
	Image         string            `json:"Image"`
	ImageID       string            `json:"ImageID,omitempty"`
	Labels        map[string]string `json:"Labels,omitempty"`
	DesiredStatus string            `json:"DesiredStatus"`
	KnownStatus   string            `json:"KnownStatus"`
	ExitCode      *int              `json:"ExitCode,omitempty"`
	Limits        ContainerLimits   `json:"Limits"`
	CreatedAt     *time.Time        `json:"CreatedAt,omitempty"`
	StartedAt     *time.Time        `json:"StartedAt,omitempty"`
	FinishedAt    *time.Time        `json:"FinishedAt,omitempty"`
	Type          string            `json:"Type"`
	ContainerARN  string            `json:"ContainerARN,omitempty"`
	LogDriver     string            `json:"LogDriver,omitempty"`
	LogOptions    map[string]string `json:"LogOptions,omitempty"`
	Health        *Health           `json:"Health,omitempty"`
	Networks      []Network         `json:"Networks,omitempty"`
}

type ContainerLimits struct {
	CPU    int64 `json:"CPU"`              // CPU units, 0: shares the task's
	Memory int64 `json:"Memory,omitempty"` // MiB
}

type Health struct {
	Status string `json:"status"`
}

type Network struct {
	NetworkMode              string   `json:"NetworkMode"`
	IPv4Addresses            []string `json:"IPv4Addresses"`
	AttachmentIndex          int      `json:"AttachmentIndex"`
	MACAddress               string   `json:"MACAddress"`
	IPv4SubnetCIDRBlock      string   `json:"IPv4SubnetCIDRBlock"`
	PrivateDNSName           string   `json:"PrivateDNSName"`
	SubnetGatewayIpv4Address string   `json:"SubnetGatewayIpv4Address"`
}

type TaskResponse struct {
	Cluster                 string              `json:"Cluster"`
	TaskARN                 string              `json:"TaskARN"`
	Family                  string              `json:"Family"`
	Revision                string              `json:"Revision"`
	DesiredStatus           string              `json:"DesiredStatus"`
	KnownStatus             string              `json:"KnownStatus"`
	Limits                  *TaskLimits         `json:"Limits,omitempty"`
	PullStartedAt           *time.Time          `json:"PullStartedAt,omitempty"`
	PullStoppedAt           *time.Time          `json:"PullStoppedAt,omitempty"`
	ExecutionStoppedAt      *time.Time          `json:"ExecutionStoppedAt,omitempty"`
	AvailabilityZone        string              `json:"AvailabilityZone,omitempty"`
	LaunchType              string              `json:"LaunchType"`
	TaskTags                map[string]string   `json:"TaskTags,omitempty"`
	EphemeralStorageMetrics *EphemeralStorage   `json:"EphemeralStorageMetrics,omitempty"`
	Containers              []ContainerResponse `json:"Containers"`
	ClockDrift              *ClockDrift         `json:"ClockDrift,omitempty"`
	VPCID                   string              `json:"VPCID,omitempty"`
}

type TaskLimits struct {
	CPU    float64 `json:"CPU"`    // vCPUs
	Memory int64   `json:"Memory"` // MiB
}

type EphemeralStorage struct {
	Utilized int64 `json:"Utilized"` // MiB
	Reserved int64 `json:"Reserved"` // MiB
}

type ClockDrift struct {
	ClockErrorBound            float64   `json:"ClockErrorBound"` // ms
	ReferenceTimestamp         time.Time `json:"ReferenceTimestamp"`
	ClockSynchronizationStatus string    `json:"ClockSynchronizationStatus"`
}

// defaultEphemeralGiB is Fargate's ephemeral storage without a setting.
const defaultEphemeralGiB = 20

func containerMetadata(t Task, i int, v4 bool) ContainerResponse {
	spec, st := t.Spec.Containers[i], t.Status.Containers[i]
	desired := "RUNNING"
	if t.DesiredStatus == "STOPPED" || st.Status == "STOPPED" {
		desired = "STOPPED"
	}
	c := ContainerResponse{
		DockerID:      st.RuntimeID,
		Name:          spec.Name,
		DockerName:    spec.Name,
		Image:         spec.Image,
		ImageID:       st.ImageDigest,
		DesiredStatus: desired,
		KnownStatus:   st.Status,
		ExitCode:      st.ExitCode,
		Limits:        ContainerLimits{CPU: spec.CPU, Memory: spec.MemoryMiB},
		CreatedAt:     st.CreatedAt,
		StartedAt:     st.StartedAt,
		FinishedAt:    st.FinishedAt,
		Type:          "NORMAL",
		ContainerARN:  spec.ContainerARN,
		Labels: map[string]string{
			"com.amazonaws.ecs.cluster":                 t.Spec.ClusterARN,
			"com.amazonaws.ecs.container-name":          spec.Name,
			"com.amazonaws.ecs.task-arn":                t.Spec.TaskARN,
			"com.amazonaws.ecs.task-definition-family":  t.Spec.Family,
			"com.amazonaws.ecs.task-definition-version": strconv.Itoa(int(t.Spec.Revision)),
			// Gantry's own: how the task is isolated (as DescribeTasks'
			// attribute gantry.isolation says).
			"gantry.isolation": cmp.Or(t.Spec.Isolation, "container"),
		},
	}
	if spec.LogConfig != nil {
		c.LogDriver, c.LogOptions = spec.LogConfig.Driver, spec.LogConfig.Options
	}
	if spec.HealthCheck != nil && st.HealthStatus != "" {
		c.Health = &Health{Status: st.HealthStatus}
	}
	if n, ok := network(t); ok && v4 {
		c.Networks = []Network{n}
	}
	return c
}

func network(t Task) (Network, bool) {
	ip := t.Status.IPv4Address
	prefix, err := netip.ParsePrefix(t.Spec.Network.SubnetCIDR)
	if ip == "" || err != nil {
		return Network{}, false
	}
	gw := t.Spec.Network.Gateway
	if gw == "" {
		gw = prefix.Masked().Addr().Next().String()
	}
	mac := t.Status.MACAddress
	if mac == "" {
		mac = t.Spec.Network.MACAddress
	}
	return Network{
		NetworkMode:              "awsvpc",
		IPv4Addresses:            []string{ip},
		MACAddress:               mac,
		IPv4SubnetCIDRBlock:      prefix.Masked().String(),
		PrivateDNSName:           "ip-" + strings.ReplaceAll(ip, ".", "-") + ".ec2.internal",
		SubnetGatewayIpv4Address: gw + "/" + strconv.Itoa(prefix.Bits()),
	}, true
}

func taskMetadata(t Task, v4 bool) TaskResponse {
	st := t.Status
	desired := t.DesiredStatus
	if desired == "" {
		desired = "RUNNING"
	}
	out := TaskResponse{
		Cluster:            t.Spec.ClusterARN,
		TaskARN:            t.Spec.TaskARN,
		Family:             t.Spec.Family,
		Revision:           strconv.Itoa(int(t.Spec.Revision)),
		DesiredStatus:      desired,
		KnownStatus:        st.Phase,
		PullStartedAt:      st.PullStartedAt,
		PullStoppedAt:      st.PullStoppedAt,
		ExecutionStoppedAt: st.ExecutionStoppedAt,
		AvailabilityZone:   t.Spec.AvailabilityZone,
		LaunchType:         "FARGATE",
		Containers:         []ContainerResponse{},
	}
	if t.Spec.CPU > 0 || t.Spec.MemoryMiB > 0 {
		out.Limits = &TaskLimits{CPU: float64(t.Spec.CPU) / 1024, Memory: t.Spec.MemoryMiB}
	}
	for i := range t.Spec.Containers {
		out.Containers = append(out.Containers, containerMetadata(t, i, v4))
	}
	if v4 {
		gib := int64(t.Spec.EphemeralGiB)
		if gib == 0 {
			gib = defaultEphemeralGiB
		}
		out.EphemeralStorageMetrics = &EphemeralStorage{Utilized: t.EphemeralUsedMiB, Reserved: gib * 1024}
		out.ClockDrift = clockDrift()
		out.VPCID = t.Spec.Network.VPCID
		if len(t.Spec.Tags) > 0 {
			out.TaskTags = t.Spec.Tags
		}
	}
	return out
}

// clockDrift is the host clock's state as the kernel's NTP discipline
// knows it (adjtimex): its maximum error, and whether it is synchronised.
func clockDrift() *ClockDrift {
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	if err != nil {
		return nil
	}
	status := "SYNCHRONIZED"
	if state == unix.TIME_ERROR {
		status = "NOT_SYNCHRONIZED"
	}
	return &ClockDrift{
		ClockErrorBound:            float64(tx.Maxerror) / 1000,
		ReferenceTimestamp:         time.Now().UTC(),
		ClockSynchronizationStatus: status,
	}
}
