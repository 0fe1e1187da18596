package controller

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/model"
)

// ECS task states in lifecycle order; a task only ever moves forward.
var taskOrder = []string{"PROVISIONING", "PENDING", "ACTIVATING", "RUNNING", "DEACTIVATING", "STOPPING", "DEPROVISIONING", "STOPPED"}

var containerOrder = []string{"PENDING", "RUNNING", "STOPPED"}

var attachmentOrder = []string{"PRECREATED", "ATTACHING", "ATTACHED", "DETACHING", "DETACHED", "DELETED"}

func rank(order []string, s string) int {
	for i, v := range order {
		if v == s {
			return i
		}
	}
	return -1
}

// advance moves *field to next unless that would move it backwards.
func advance(order []string, field **string, next string) {
	if rank(order, next) > rank(order, ecstypes.Deref(*field)) {
		*field = ecstypes.String(next)
	}
}

func setOnce(field **ecstypes.Time, t *time.Time) {
	if *field == nil && t != nil && !t.IsZero() {
		*field = ecstypes.At(*t)
	}
}

// lastStatusFor maps an agent phase onto the ECS lifecycle.
func lastStatusFor(st agent.TaskStatus) string {
	switch st.Phase {
	case agent.PhasePending:
		// The ENI is the PROVISIONING step; once the task has its address,
		// or its image pull has begun (the agent pulls before the ENI), it
		// is pulling and creating containers (PENDING).
		if st.ConnectivityAt != nil || st.IPv4Address != "" || st.PullStartedAt != nil {
			return "PENDING"
		}
		return "PROVISIONING"
	case agent.PhaseRunning:
		return "RUNNING"
	case agent.PhaseStopping:
		// Every container has exited: what is left is releasing the
		// task's network and storage.
		if st.ExecutionStoppedAt != nil {
			return "DEPROVISIONING"
		}
		return "STOPPING"
	case agent.PhaseStopped:
		return "STOPPED"
	}
	return ""
}

// Apply folds an agent report into a stored task. It is idempotent and
// monotonic, so reports may repeat or arrive again after a restart; it
// reports whether anything changed (and then bumps the task's version).
func Apply(rec *model.TaskRecord, st agent.TaskStatus, now time.Time) bool {
	before, _ := json.Marshal(rec)
	t := &rec.Task
	next := lastStatusFor(st)
	advance(taskOrder, &t.LastStatus, next)
	last := ecstypes.Deref(t.LastStatus)
	stopping := rank(taskOrder, last) >= rank(taskOrder, "DEACTIVATING")

	setOnce(&t.PullStartedAt, st.PullStartedAt)
	setOnce(&t.PullStoppedAt, st.PullStoppedAt)
	setOnce(&t.StartedAt, st.StartedAt)
	if st.ConnectivityAt != nil && t.ConnectivityAt == nil {
		t.Connectivity = ecstypes.String("CONNECTED")
		setOnce(&t.ConnectivityAt, st.ConnectivityAt)
	}
	if stopping {
		t.DesiredStatus = ecstypes.String("STOPPED")
		if t.StoppingAt == nil {
			t.StoppingAt = ecstypes.At(now)
		}
		if t.StopCode == nil {
			// A stop the control plane asked for wins over the agent's view
			// of it (the agent only sees containers exiting).
			code, reason := rec.StopCode, rec.StoppedReason
			if code == "" {
				code, reason = st.StopCode, st.StoppedReason
			}
			if code != "" {
				t.StopCode = ecstypes.String(code)
			}
			if reason != "" && t.StoppedReason == nil {
				t.StoppedReason = ecstypes.String(reason)
			}
		}
	}
	if rank(taskOrder, last) >= rank(taskOrder, "DEPROVISIONING") {
		setOnce(&t.ExecutionStoppedAt, st.ExecutionStoppedAt)
	}
	if last == "STOPPED" {
		if t.ExecutionStoppedAt == nil {
			t.ExecutionStoppedAt = ecstypes.At(now)
		}
		if t.StoppedAt == nil {
			t.StoppedAt = ecstypes.At(now)
		}
	}

	applyENI(rec, st, last)
	applyContainers(rec, st, last)
	t.HealthStatus = ecstypes.String(taskHealth(rec))

	after, _ := json.Marshal(rec)
	if string(before) == string(after) {
		return false
	}
	t.Version = ecstypes.Int64(ecstypes.Deref(t.Version) + 1)
	return true
}

func applyENI(rec *model.TaskRecord, st agent.TaskStatus, last string) {
	eni := ENIAttachment(&rec.Task)
	if eni == nil {
		return
	}
	if st.IPv4Address != "" && detail(eni, "privateIPv4Address") == "" {
		setDetail(eni, "privateIPv4Address", st.IPv4Address)
		setDetail(eni, "privateDnsName", PrivateDNSName(st.IPv4Address, regionOf(rec)))
		advance(attachmentOrder, &eni.Status, "ATTACHED")
	}
	if st.MACAddress != "" {
		setDetail(eni, "macAddress", st.MACAddress)
	}
	if last == "STOPPED" {
		advance(attachmentOrder, &eni.Status, "DELETED")
	}
}

func applyContainers(rec *model.TaskRecord, st agent.TaskStatus, last string) {
	ip := ""
	var attachmentID *string
	if eni := ENIAttachment(&rec.Task); eni != nil {
		ip = detail(eni, "privateIPv4Address")
		attachmentID = eni.Id
	}
	for _, c := range rec.Task.Containers {
		for _, cs := range st.Containers {
			if cs.Name != ecstypes.Deref(c.Name) {
				continue
			}
			advance(containerOrder, &c.LastStatus, cs.Status)
			if cs.RuntimeID != "" {
				c.RuntimeId = ecstypes.String(cs.RuntimeID)
			}
			if cs.ImageDigest != "" {
				c.ImageDigest = ecstypes.String(cs.ImageDigest)
			}
			if cs.ExitCode != nil && c.ExitCode == nil {
				c.ExitCode = ecstypes.Int32(int32(*cs.ExitCode))
			}
			if cs.Reason != "" && c.Reason == nil {
				c.Reason = ecstypes.String(cs.Reason)
			}
			if cs.HealthStatus != "" && ecstypes.Deref(c.LastStatus) != "STOPPED" {
				c.HealthStatus = ecstypes.String(cs.HealthStatus)
			}
		}
		if last == "STOPPED" {
			advance(containerOrder, &c.LastStatus, "STOPPED")
		}
		if ip != "" && len(c.NetworkInterfaces) == 0 {
			c.NetworkInterfaces = []*ecstypes.NetworkInterface{{AttachmentId: attachmentID, PrivateIpv4Address: ecstypes.String(ip)}}
		}
	}
}

// taskHealth follows ECS: only essential containers with a health check
// count; any UNHEALTHY makes the task UNHEALTHY, all HEALTHY makes it
// HEALTHY, anything else is UNKNOWN.
func taskHealth(rec *model.TaskRecord) string {
	if rec.Spec == nil {
		return "UNKNOWN"
	}
	checked, healthy := 0, 0
	for _, cs := range rec.Spec.Containers {
		if !cs.Essential || cs.HealthCheck == nil {
			continue
		}
		checked++
		for _, c := range rec.Task.Containers {
			if ecstypes.Deref(c.Name) != cs.Name {
				continue
			}
			switch ecstypes.Deref(c.HealthStatus) {
			case "UNHEALTHY":
				return "UNHEALTHY"
			case "HEALTHY":
				healthy++
			}
		}
	}
	if checked > 0 && healthy == checked {
		return "HEALTHY"
	}
	return "UNKNOWN"
}

// ENIAttachment returns the task's ElasticNetworkInterface attachment.
func ENIAttachment(t *ecstypes.Task) *ecstypes.Attachment {
	for _, a := range t.Attachments {
		if ecstypes.Deref(a.Type_) == "ElasticNetworkInterface" {
			return a
		}
	}
	return nil
}

func detail(a *ecstypes.Attachment, name string) string {
	for _, d := range a.Details {
		if ecstypes.Deref(d.Name) == name {
			return ecstypes.Deref(d.Value)
		}
	}
	return ""
}

func setDetail(a *ecstypes.Attachment, name, value string) {
	for _, d := range a.Details {
		if ecstypes.Deref(d.Name) == name {
			d.Value = ecstypes.String(value)
			return
		}
	}
	a.Details = append(a.Details, &ecstypes.KeyValuePair{Name: ecstypes.String(name), Value: ecstypes.String(value)})
}

// PrivateDNSName is the name EC2 gives an address: ip-A-B-C-D.ec2.internal
// in us-east-1, ip-A-B-C-D.REGION.compute.internal elsewhere.
func PrivateDNSName(ip, region string) string {
	host := "ip-" + strings.ReplaceAll(ip, ".", "-")
	if region == "us-east-1" {
		return host + ".ec2.internal"
	}
	return fmt.Sprintf("%s.%s.compute.internal", host, region)
}

// regionOf reads the region from the task ARN (arn:aws:ecs:REGION:...).
func regionOf(rec *model.TaskRecord) string {
	parts := strings.SplitN(ecstypes.Deref(rec.Task.TaskArn), ":", 5)
	if len(parts) < 4 {
		return ""
	}
	return parts[3]
}

// markStopped ends a task the agent cannot report on any more.
func markStopped(rec *model.TaskRecord, code, reason string, now time.Time) bool {
	if rec.StopCode == "" {
		rec.StopCode, rec.StoppedReason = code, reason
	}
	return Apply(rec, agent.TaskStatus{TaskID: TaskID(ecstypes.Deref(rec.Task.TaskArn)), Phase: agent.PhaseStopped}, now)
}

// TaskID is the last part of a task ARN (or the id itself).
func TaskID(arn string) string { return arn[strings.LastIndex(arn, "/")+1:] }

// taskKey is where a task ARN's record lives:
// arn:aws:ecs:REGION:ACCOUNT:task/CLUSTER/ID -> ACCOUNT/REGION/CLUSTER/ID.
func taskKey(arn string) (string, bool) {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || !strings.HasPrefix(parts[5], "task/") {
		return "", false
	}
	cluster, id, ok := strings.Cut(strings.TrimPrefix(parts[5], "task/"), "/")
	if !ok {
		return "", false
	}
	return model.Scope{Account: parts[4], Region: parts[3]}.TaskKey(cluster, id), true
}
