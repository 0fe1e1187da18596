// Package agent is the per-host half of Gantry: it turns a TaskSpec into
// running containers (containerd), a network namespace with an address (CNI)
// and cgroup limits, and reports what happens to them.
//
// The control plane talks to an agent only through the Agent interface and
// hears back only through Reporter, with plain JSON-serialisable messages,
// so the same calls can cross a network when agents run on other hosts.
package agent

import (
	"context"
	"errors"
	"time"
)

// Agent runs tasks on one host.
type Agent interface {
	// Info describes the host: its id, and the resources tasks may reserve.
	Info(ctx context.Context) (HostInfo, error)
	// StartTask accepts a task and returns once it is recorded; pulling,
	// network set-up and starting continue in the background and are
	// reported through the Reporter. Starting an already-known task id is a
	// no-op (the control plane may retry after a restart).
	StartTask(ctx context.Context, spec TaskSpec) error
	// StopTask asks a task to stop: SIGTERM to each container, SIGKILL after
	// the container's stop timeout. It returns at once; the end is reported.
	StopTask(ctx context.Context, req StopRequest) error
	// Tasks returns the current status of every task this agent knows,
	// including ones that ended while nobody was listening, so a restarted
	// control plane can reconcile. A task stays known until Forget.
	Tasks(ctx context.Context) ([]TaskStatus, error)
	// Forget drops a STOPPED task's record after the control plane stored it.
	Forget(ctx context.Context, taskID string) error
	// SetFirewall replaces the host's security-group state: the whole of
	// it, every time, so a lost or repeated call is repaired by the next.
	// The agent keeps it across restarts and applies it again whenever its
	// own tasks' networks come or go.
	SetFirewall(ctx context.Context, st FirewallState) error
	// OpenExec prepares an ECS Exec session: Command to run in a running
	// container of a task. The agent serves the session's stream itself
	// (package execstream: a websocket at StreamURL, admitted once with
	// Token until ExpiresAt), so the command's bytes never pass through
	// the control plane, which only hands the session to the client. The
	// process starts when the client attaches. ErrExecTargetNotRunning:
	// the task or container is not running here.
	OpenExec(ctx context.Context, req ExecRequest) (ExecSession, error)
}

// ExecRequest asks for a command in one container of a task.
type ExecRequest struct {
	TaskID    string   `json:"taskId"`
	Container string   `json:"containerName"`
	Command   []string `json:"command"`
}

// ExecSession is where and how to attach to a prepared command.
type ExecSession struct {
	SessionID string    `json:"sessionId"`
	StreamURL string    `json:"streamUrl"`
	Token     string    `json:"tokenValue"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// ErrExecTargetNotRunning is OpenExec's answer for a task or container
// that is not running on the agent.
var ErrExecTargetNotRunning = errors.New("the task or container is not running")

// Reporter receives status changes from agents. Reports for one task arrive
// in order; every report carries the task's whole status, so a lost one is
// repaired by the next (or by Agent.Tasks).
type Reporter interface {
	TaskChanged(ctx context.Context, st TaskStatus)
}

// HostInfo describes an agent's host.
type HostInfo struct {
	ID         string `json:"id"`
	CPUUnits   int64  `json:"cpuUnits"` // 1024 per core
	MemoryMiB  int64  `json:"memoryMiB"`
	Runtime    string `json:"runtime"` // e.g. "runc"
	Containerd string `json:"containerd"`
	// Isolations are the isolation modes this host can run tasks in
	// (IsolationContainer, IsolationSandbox); SandboxUnavailable says why
	// sandbox is not among them.
	Isolations         []string `json:"isolations,omitempty"`
	SandboxUnavailable string   `json:"sandboxUnavailable,omitempty"`
}

// A task's isolation: how its containers are kept from the host and from
// other tasks. Container: runc (namespaces, cgroups, seccomp) on the host's
// kernel. Sandbox: gVisor's runsc, each task's containers on a user-space
// kernel of their own.
const (
	IsolationContainer = "container"
	IsolationSandbox   = "sandbox"
)

// TaskSpec is everything the agent needs to run one task.
type TaskSpec struct {
	TaskID       string          `json:"taskId"` // 32 hex chars, the last part of the ARN
	TaskARN      string          `json:"taskArn"`
	Cluster      string          `json:"cluster"` // cluster name
	ClusterARN   string          `json:"clusterArn"`
	Family       string          `json:"family"`
	Revision     int32           `json:"revision"`
	CPU          int64           `json:"cpu"`    // task CPU units (1024 = 1 vCPU)
	MemoryMiB    int64           `json:"memory"` // task memory, MiB
	EphemeralGiB int32           `json:"ephemeralStorageGiB"`
	Network      NetworkSpec     `json:"network"`
	Containers   []ContainerSpec `json:"containers"`
	// Tags from the task, passed on for labels and metadata.
	Tags map[string]string `json:"tags,omitempty"`
	// AvailabilityZone of the task's subnet, for the task metadata endpoint.
	AvailabilityZone string `json:"availabilityZone,omitempty"`
	// Isolation is IsolationContainer or IsolationSandbox; empty means
	// IsolationContainer.
	Isolation string `json:"isolation,omitempty"`
	// TaskRoleARN is the role whose credentials the task's containers get
	// from the metadata endpoint; ExecutionRoleARN the one the agent reads
	// the task's secrets as. Empty: none.
	TaskRoleARN      string `json:"taskRoleArn,omitempty"`
	ExecutionRoleARN string `json:"executionRoleArn,omitempty"`
}

// NetworkSpec is the task's ENI: which subnet it takes an address from.
type NetworkSpec struct {
	ENIID      string `json:"eniId"`
	MACAddress string `json:"macAddress"`
	SubnetID   string `json:"subnetId"`
	SubnetCIDR string `json:"subnetCidr"` // e.g. 172.31.0.0/20
	Gateway    string `json:"gateway"`    // first usable address of the subnet
	VPCID      string `json:"vpcId"`
	// SecurityGroupIDs are the ENI's groups (at most five), as RunTask
	// resolved them; EC2 reads them to refuse deleting a group in use.
	SecurityGroupIDs []string `json:"securityGroupIds,omitempty"`
	// PublicIPv4 is the ENI's public address (assignPublicIp ENABLED),
	// from the server's --public-ip-range; empty: none.
	PublicIPv4 string `json:"publicIpv4,omitempty"`
}

// ContainerSpec is one container of a task, with overrides already applied.
type ContainerSpec struct {
	Name              string            `json:"name"`
	Image             string            `json:"image"`
	Essential         bool              `json:"essential"`
	EntryPoint        []string          `json:"entryPoint,omitempty"`
	Command           []string          `json:"command,omitempty"`
	Environment       map[string]string `json:"environment,omitempty"`
	WorkingDirectory  string            `json:"workingDirectory,omitempty"`
	User              string            `json:"user,omitempty"`
	ReadonlyRootfs    bool              `json:"readonlyRootFilesystem,omitempty"`
	InitProcess       bool              `json:"initProcessEnabled,omitempty"`
	CPU               int64             `json:"cpu,omitempty"`               // CPU units; 0 = share the task's
	MemoryMiB         int64             `json:"memory,omitempty"`            // hard limit; 0 = none beyond the task's
	MemoryReservation int64             `json:"memoryReservation,omitempty"` // soft limit
	Ulimits           []Ulimit          `json:"ulimits,omitempty"`
	DependsOn         []Dependency      `json:"dependsOn,omitempty"`
	HealthCheck       *HealthCheck      `json:"healthCheck,omitempty"`
	StopTimeout       time.Duration     `json:"stopTimeout"` // default 30s
	StartTimeout      time.Duration     `json:"startTimeout,omitempty"`
	Hostname          string            `json:"hostname,omitempty"`
	// ContainerARN is the ARN DescribeTasks shows, for the metadata endpoint.
	ContainerARN string `json:"containerArn,omitempty"`
	// LogConfig is the container's logConfiguration; nil or a driver other
	// than awslogs keeps its output on the host only.
	LogConfig *LogConfig `json:"logConfiguration,omitempty"`
	// Mounts are the container's mountPoints with its volumesFrom already
	// resolved into them.
	Mounts []Mount `json:"mounts,omitempty"`
	// Secrets are the container's secrets: environment variables whose
	// values the agent reads through its SecretSource when the container
	// starts. Only the references are here, never the values, so no task
	// record holds a secret.
	Secrets []SecretRef `json:"secrets,omitempty"`
	// RepositoryCredentials is repositoryCredentials.credentialsParameter:
	// a secret holding {"username": ..., "password": ...} for pulling
	// Image from a private registry.
	RepositoryCredentials string `json:"repositoryCredentials,omitempty"`
	// CapAdd and CapDrop are linuxParameters.capabilities (names without
	// CAP_; "ALL" in CapDrop drops every capability): dropped first, then
	// added, on top of the default set.
	CapAdd  []string `json:"capAdd,omitempty"`
	CapDrop []string `json:"capDrop,omitempty"`
}

// SecretRef is one entry of a container's secrets: the environment
// variable Name gets the value ValueFrom names (a Secrets Manager ARN,
// optionally with :json-key:version-stage:version-id, or an SSM parameter
// name or ARN).
type SecretRef struct {
	Name      string `json:"name"`
	ValueFrom string `json:"valueFrom"`
}

// SecretSource reads the values of secrets for an agent, as the task's
// execution role would in AWS. It is asked when a task starts; the agent
// keeps what it returns in memory only.
type SecretSource interface {
	// GetSecrets returns the value of each ValueFrom in order, or an
	// error saying which could not be read (its message becomes part of
	// the task's stoppedReason, so it must never contain a value).
	GetSecrets(ctx context.Context, req SecretRequest) ([]string, error)
}

// SecretRequest asks for the values a task's containers reference.
type SecretRequest struct {
	Account   string   `json:"account"`
	Region    string   `json:"region"`
	TaskARN   string   `json:"taskArn"`
	ValueFrom []string `json:"valueFrom"`
	// ExecutionRoleARN is the task's execution role: each value is read
	// only if that role's policies allow it.
	ExecutionRoleARN string `json:"executionRoleArn,omitempty"`
}

// Mount puts a task volume at ContainerPath. A volume is scratch space on
// the task's ephemeral storage, shared by every container that mounts it
// and gone with the task.
type Mount struct {
	Volume        string `json:"sourceVolume"`
	ContainerPath string `json:"containerPath"`
	ReadOnly      bool   `json:"readOnly,omitempty"`
	// EFS, when set, makes the volume an EFS file system (efsVolumeConfiguration)
	// instead of task scratch: shared, outliving the task.
	EFS *EFSMount `json:"efs,omitempty"`
}

// EFSMount is an efsVolumeConfiguration resolved by the control plane.
// HostPath is the file system's tree on the agent's host; Root is the
// directory inside it the task sees as the mount's root (the access
// point's, or rootDirectory), made with Create's owner and mode when it
// does not exist. User is the access point's POSIX user.
type EFSMount struct {
	FileSystemID  string       `json:"fileSystemId"`
	AccessPointID string       `json:"accessPointId,omitempty"`
	HostPath      string       `json:"hostPath"`
	Root          string       `json:"root"`
	Create        *EFSCreation `json:"create,omitempty"`
	User          *EFSUser     `json:"user,omitempty"`
	// MountTarget is the file system's mount target in the task's VPC
	// (its subnet's, else the first): where an agent that does not hold
	// the tree mounts it over NFS.
	MountTarget *EFSMountTarget `json:"mountTarget,omitempty"`
	// What the file system policy lets the task's client do (zero
	// values: everything, the default policy). MountDenied, when set, is
	// mount.nfs4's refusal (no ClientMount): the task fails to start with
	// it. ReadOnly (no ClientWrite) makes every container's mount of the
	// volume read-only. RootSquash (no ClientRootAccess) makes uid and
	// gid 0 on the volume 65534, as an NFS server squashing root does.
	MountDenied string `json:"mountDenied,omitempty"`
	ReadOnly    bool   `json:"readOnly,omitempty"`
	RootSquash  bool   `json:"rootSquash,omitempty"`
}

// EFSMountTarget is the address a file system is served at over NFS.
type EFSMountTarget struct {
	ID             string   `json:"id"`
	IP             string   `json:"ip"`
	VPCID          string   `json:"vpcId"`
	SecurityGroups []string `json:"securityGroups,omitempty"`
}

// EFSCreation is an access point's CreationInfo.
type EFSCreation struct {
	UID  uint32 `json:"uid"`
	GID  uint32 `json:"gid"`
	Mode uint32 `json:"mode"`
}

// EFSUser is an access point's PosixUser.
type EFSUser struct {
	UID           uint32   `json:"uid"`
	GID           uint32   `json:"gid"`
	SecondaryGIDs []uint32 `json:"secondaryGids,omitempty"`
}

// LogConfig is ECS's logConfiguration: a driver and its options, e.g.
// awslogs with awslogs-group, awslogs-region, awslogs-stream-prefix,
// awslogs-create-group, mode and max-buffer-size.
type LogConfig struct {
	Driver  string            `json:"logDriver"`
	Options map[string]string `json:"options,omitempty"`
}

type Ulimit struct {
	Name string `json:"name"` // as ECS names them: nofile, nproc, core, ...
	Soft int64  `json:"softLimit"`
	Hard int64  `json:"hardLimit"`
}

// Dependency is ECS's dependsOn: Condition is START, COMPLETE, SUCCESS or HEALTHY.
type Dependency struct {
	Container string `json:"containerName"`
	Condition string `json:"condition"`
}

// HealthCheck is ECS's container healthCheck, durations already defaulted.
type HealthCheck struct {
	Command     []string      `json:"command"` // ["CMD-SHELL", "..."] or ["CMD", ...]
	Interval    time.Duration `json:"interval"`
	Timeout     time.Duration `json:"timeout"`
	Retries     int           `json:"retries"`
	StartPeriod time.Duration `json:"startPeriod"`
}

// FirewallState is the security-group state an agent enforces: the tasks
// that matter to its host (its own, and any task whose address is a member
// of a group its tasks' rules name) and the rules of their groups.
type FirewallState struct {
	Tasks  []FirewallTask  `json:"tasks"`
	Groups []FirewallGroup `json:"groups"`
}

// FirewallTask is one task's ENI as security groups see it.
type FirewallTask struct {
	TaskID string `json:"taskId"`
	VPCID  string `json:"vpcId"`
	// IPv4 is the task's address once known; the agent knows its own
	// tasks' addresses before the control plane does.
	IPv4   string   `json:"ipv4,omitempty"`
	Groups []string `json:"securityGroupIds"`
	// PublicIPv4, when set, is a public address that reaches the task
	// (its VPC has an internet gateway): the agent forwards it.
	PublicIPv4 string `json:"publicIpv4,omitempty"`
}

// FirewallGroup is a security group's rules.
type FirewallGroup struct {
	ID      string         `json:"groupId"`
	VPCID   string         `json:"vpcId"`
	Ingress []FirewallRule `json:"ingress,omitempty"`
	Egress  []FirewallRule `json:"egress,omitempty"`
}

// FirewallRule allows traffic of Protocol ("-1" all, "tcp", "udp", "icmp"
// or a number) on ports FromPort..ToPort (ICMP: type and code; nil or -1:
// all) from (ingress) or to (egress) any of CIDRs or the members of Groups.
type FirewallRule struct {
	Protocol string   `json:"protocol"`
	FromPort *int32   `json:"fromPort,omitempty"`
	ToPort   *int32   `json:"toPort,omitempty"`
	CIDRs    []string `json:"cidrs,omitempty"`
	Groups   []string `json:"groupIds,omitempty"`
}

// StopRequest asks for a task to stop.
type StopRequest struct {
	TaskID string `json:"taskId"`
	Reason string `json:"reason,omitempty"`
}

// Task phases as the agent sees them; the control plane maps them onto the
// ECS lifecycle (PROVISIONING ... STOPPED).
const (
	PhasePending  = "PENDING"  // accepted, network and images being prepared
	PhaseRunning  = "RUNNING"  // every container that should be running is
	PhaseStopping = "STOPPING" // containers being stopped
	PhaseStopped  = "STOPPED"  // nothing left on the host but this record
)

// Why a task stopped, when the agent decided it (the control plane adds
// UserInitiated and friends for stops it asked for).
const (
	StopEssentialExited = "EssentialContainerExited"
	StopFailedToStart   = "TaskFailedToStart"
)

// TaskStatus is the whole observable state of a task on its host.
type TaskStatus struct {
	TaskID string `json:"taskId"`
	Phase  string `json:"phase"`
	// StopCode and StoppedReason are set when the agent ended the task by
	// itself (an essential container exited, the task failed to start).
	StopCode      string `json:"stopCode,omitempty"`
	StoppedReason string `json:"stoppedReason,omitempty"`

	PullStartedAt      *time.Time `json:"pullStartedAt,omitempty"`
	PullStoppedAt      *time.Time `json:"pullStoppedAt,omitempty"`
	ConnectivityAt     *time.Time `json:"connectivityAt,omitempty"`
	StartedAt          *time.Time `json:"startedAt,omitempty"`
	ExecutionStoppedAt *time.Time `json:"executionStoppedAt,omitempty"`

	// The task's network once attached.
	IPv4Address string `json:"ipv4Address,omitempty"`
	MACAddress  string `json:"macAddress,omitempty"`

	Containers []ContainerStatus `json:"containers"`
}

// ContainerStatus is one container's state.
type ContainerStatus struct {
	Name         string `json:"name"`
	Status       string `json:"lastStatus"` // PENDING, RUNNING, STOPPED
	RuntimeID    string `json:"runtimeId,omitempty"`
	ImageDigest  string `json:"imageDigest,omitempty"`
	ExitCode     *int   `json:"exitCode,omitempty"`
	Reason       string `json:"reason,omitempty"`       // e.g. OutOfMemoryError: Container killed due to memory usage
	HealthStatus string `json:"healthStatus,omitempty"` // HEALTHY, UNHEALTHY, UNKNOWN

	CreatedAt  *time.Time `json:"createdAt,omitempty"`
	StartedAt  *time.Time `json:"startedAt,omitempty"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
}

// UsageSource is implemented by agents that sample their tasks' resource
// use (the local agent does, every 5 s from cgroups). The control plane
// polls it for CloudWatch's AWS/ECS metrics; the messages are plain JSON so
// the call can cross a network like Agent's.
type UsageSource interface {
	// Usage returns the latest sample of every task with running
	// containers. A sample is identified by its task and Time: polling
	// faster than the agent samples returns the same sample again.
	Usage(ctx context.Context) ([]TaskUsage, error)
}

// TaskUsage is one sample of a task's resource use, summed over its
// running containers.
type TaskUsage struct {
	TaskID    string    `json:"taskId"`
	TaskARN   string    `json:"taskArn"`
	Cluster   string    `json:"cluster"`
	CPU       int64     `json:"cpu"`    // reserved CPU units (1024 = 1 vCPU)
	MemoryMiB int64     `json:"memory"` // reserved memory, MiB
	Time      time.Time `json:"time"`
	// CPUUnits is the CPU used between the previous sample and this one,
	// in CPU units (1024 = one core busy); valid only when HasCPU.
	CPUUnits float64 `json:"cpuUnits"`
	HasCPU   bool    `json:"hasCpu"`
	// MemoryBytes is memory in use, page cache excluded (as docker stats).
	MemoryBytes uint64 `json:"memoryBytes"`
}

// LogSink takes the output agents capture for containers using awslogs. It
// is the agents' way into CloudWatch Logs, with plain messages so it can
// cross a network like Agent and Reporter.
type LogSink interface {
	// OpenStream makes sure events can be put to the stream, creating the
	// stream and, with CreateGroup, the group, as the awslogs driver does
	// when a container starts. A missing group is an error naming it.
	OpenStream(ctx context.Context, req OpenLogStream) error
	// PutLogs stores a batch. It is idempotent by event offset: events at
	// or below the highest offset already stored for the stream are
	// skipped, so an agent may resend a batch it is unsure about.
	PutLogs(ctx context.Context, b LogBatch) error
}

// LogStreamRef names a log stream in an account and region.
type LogStreamRef struct {
	Account string `json:"account"`
	Region  string `json:"region"`
	Group   string `json:"logGroupName"`
	Stream  string `json:"logStreamName"`
}

type OpenLogStream struct {
	LogStreamRef
	CreateGroup bool `json:"createGroup,omitempty"`
}

// LogBatch is events for one stream, in the order they were written.
type LogBatch struct {
	LogStreamRef
	Events []LogEvent `json:"events"`
}

type LogEvent struct {
	Timestamp int64  `json:"timestamp"` // ms since the epoch, when the line was read
	Message   string `json:"message"`
	// Offset increases with every event of a stream: the agent's position
	// in its on-disk buffer, which makes resending safe.
	Offset int64 `json:"offset"`
}

// ErrLogGroupGone is what a LogSink returns when a batch's group no longer
// exists: the agent drops the batch (and says so) instead of retrying.
var ErrLogGroupGone = errors.New("ResourceNotFoundException: The specified log group does not exist.")
