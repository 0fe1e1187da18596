package controller

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/model"
	"github.com/gantry-dev/gantry/internal/state"
)

var sc = model.Scope{Account: "000000000000", Region: "us-east-1"}

func newRecord(id string) *model.TaskRecord {
	arn := sc.TaskARN("default", id)
	return &model.TaskRecord{
		Task: ecstypes.Task{
			TaskArn:       ecstypes.String(arn),
			LastStatus:    ecstypes.String("PROVISIONING"),
			DesiredStatus: ecstypes.String("RUNNING"),
			Version:       ecstypes.Int64(1),
			Attachments: []*ecstypes.Attachment{{
				Id: ecstypes.String("att"), Type_: ecstypes.String("ElasticNetworkInterface"), Status: ecstypes.String("PRECREATED"),
				Details: []*ecstypes.KeyValuePair{{Name: ecstypes.String("subnetId"), Value: ecstypes.String("subnet-1")}},
			}},
			Containers: []*ecstypes.Container{{Name: ecstypes.String("app"), LastStatus: ecstypes.String("PENDING")}},
		},
		Spec: &agent.TaskSpec{TaskID: id, TaskARN: arn, Containers: []agent.ContainerSpec{{Name: "app", Essential: true}}},
	}
}

func ptr[T any](v T) *T { return &v }

func TestApplyIsMonotonicAndKeepsExitCodes(t *testing.T) {
	rec := newRecord("0123456789abcdef0123456789abcdef")
	now := time.Now()
	running := agent.TaskStatus{Phase: agent.PhaseRunning, IPv4Address: "172.31.0.10", ConnectivityAt: &now, StartedAt: &now,
		Containers: []agent.ContainerStatus{{Name: "app", Status: "RUNNING", RuntimeID: "c1"}}}
	if !Apply(rec, running, now) {
		t.Fatal("first RUNNING report changed nothing")
	}
	if v := *rec.Task.Version; v != 2 {
		t.Fatalf("version %d, want 2", v)
	}
	if Apply(rec, running, now) {
		t.Fatal("repeating a report changed the task")
	}
	eni := ENIAttachment(&rec.Task)
	if *eni.Status != "ATTACHED" || detail(eni, "privateDnsName") != "ip-172-31-0-10.ec2.internal" {
		t.Fatalf("ENI after RUNNING: %s %v", *eni.Status, detail(eni, "privateDnsName"))
	}

	// Containers all exited, the network still being released.
	exitedAt := now.Add(time.Second)
	Apply(rec, agent.TaskStatus{Phase: agent.PhaseStopping, ExecutionStoppedAt: &exitedAt,
		Containers: []agent.ContainerStatus{{Name: "app", Status: "STOPPED", ExitCode: ptr(3)}}}, now)
	if tk := rec.Task; *tk.LastStatus != "DEPROVISIONING" || tk.ExecutionStoppedAt == nil || !tk.ExecutionStoppedAt.Equal(exitedAt) {
		t.Fatalf("after the containers exited: %s, executionStoppedAt %v", *tk.LastStatus, tk.ExecutionStoppedAt)
	}

	stopped := agent.TaskStatus{Phase: agent.PhaseStopped, StopCode: agent.StopEssentialExited, StoppedReason: "Essential container in task exited",
		Containers: []agent.ContainerStatus{{Name: "app", Status: "STOPPED", ExitCode: ptr(3)}}}
	Apply(rec, stopped, now)
	// A late, stale report must not move anything back or lose the exit code.
	Apply(rec, agent.TaskStatus{Phase: agent.PhaseRunning, Containers: []agent.ContainerStatus{{Name: "app", Status: "RUNNING"}}}, now)

	tk := rec.Task
	if *tk.LastStatus != "STOPPED" || *tk.DesiredStatus != "STOPPED" || *tk.StopCode != "EssentialContainerExited" {
		t.Fatalf("task after stop: %s/%s %v", *tk.LastStatus, *tk.DesiredStatus, tk.StopCode)
	}
	if c := tk.Containers[0]; *c.LastStatus != "STOPPED" || c.ExitCode == nil || *c.ExitCode != 3 {
		t.Fatalf("container after stop: %+v", c)
	}
	if tk.StoppedAt == nil || tk.StoppingAt == nil || tk.ExecutionStoppedAt == nil {
		t.Fatal("stop timestamps missing")
	}
	if *eni.Status != "DELETED" {
		t.Fatalf("ENI after STOPPED: %s", *eni.Status)
	}
}

func TestRequestedStopCodeWins(t *testing.T) {
	rec := newRecord("0123456789abcdef0123456789abcdee")
	rec.StopCode, rec.StoppedReason = StopUserInitiated, "bye"
	Apply(rec, agent.TaskStatus{Phase: agent.PhaseStopped, StopCode: agent.StopEssentialExited, StoppedReason: "Essential container in task exited"}, time.Now())
	if *rec.Task.StopCode != StopUserInitiated || *rec.Task.StoppedReason != "bye" {
		t.Fatalf("stop code %s reason %s", *rec.Task.StopCode, *rec.Task.StoppedReason)
	}
}

// memAgent is an agent.Agent holding statuses in memory, standing in for a
// host so reconciliation can be checked without containers.
type memAgent struct {
	mu       sync.Mutex
	tasks    map[string]agent.TaskStatus
	started  []string
	forgot   []string
	stopping []string
}

func (a *memAgent) Info(context.Context) (agent.HostInfo, error) {
	return agent.HostInfo{ID: "h1"}, nil
}
func (a *memAgent) StartTask(_ context.Context, s agent.TaskSpec) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.started = append(a.started, s.TaskID)
	a.tasks[s.TaskID] = agent.TaskStatus{TaskID: s.TaskID, Phase: agent.PhasePending}
	return nil
}
func (a *memAgent) StopTask(_ context.Context, r agent.StopRequest) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stopping = append(a.stopping, r.TaskID)
	return nil
}
func (a *memAgent) Tasks(context.Context) ([]agent.TaskStatus, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []agent.TaskStatus
	for _, t := range a.tasks {
		out = append(out, t)
	}
	return out, nil
}
func (a *memAgent) SetFirewall(context.Context, agent.FirewallState) error { return nil }
func (a *memAgent) OpenExec(context.Context, agent.ExecRequest) (agent.ExecSession, error) {
	return agent.ExecSession{}, agent.ErrExecTargetNotRunning
}

func (a *memAgent) Forget(_ context.Context, id string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.tasks, id)
	a.forgot = append(a.forgot, id)
	return nil
}

func TestReconcileAfterRestart(t *testing.T) {
	ctx := context.Background()
	store, err := state.OpenSQLite(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()

	exited := newRecord("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")  // ended while the server was down
	lost := newRecord("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")    // running, but the agent forgot it
	pending := newRecord("cccccccccccccccccccccccccccccccc") // stored, never handed over
	stray := "dddddddddddddddddddddddddddddddd"              // on the agent only
	// Stops recorded while the server was down: one handed over (its stop
	// is sent again), one DEACTIVATING (its targets drain first: the
	// service scheduler stops it later).
	handed := newRecord("eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee")
	draining := newRecord("ffffffffffffffffffffffffffffffff")
	for status, r := range map[string]*model.TaskRecord{"STOPPING": handed, "DEACTIVATING": draining} {
		r.Task.LastStatus, r.Task.DesiredStatus = ecstypes.String(status), ecstypes.String("STOPPED")
		r.StopCode, r.StoppedReason = "ServiceSchedulerInitiated", "Scaling activity initiated by (deployment ecs-svc/1)"
	}
	lost.Task.LastStatus = ecstypes.String("RUNNING")
	lost.Task.PullStartedAt = ecstypes.At(time.Now())
	for _, r := range []*model.TaskRecord{exited, lost, pending, handed, draining} {
		if err := store.Update(ctx, func(tx state.Tx) error {
			key, _ := taskKey(*r.Task.TaskArn)
			return tx.Put(model.KindTask, key, r)
		}); err != nil {
			t.Fatal(err)
		}
	}
	ag := &memAgent{tasks: map[string]agent.TaskStatus{
		exited.Spec.TaskID: {TaskID: exited.Spec.TaskID, Phase: agent.PhaseStopped, StopCode: agent.StopEssentialExited,
			Containers: []agent.ContainerStatus{{Name: "app", Status: "STOPPED", ExitCode: ptr(7)}}},
		stray:                {TaskID: stray, Phase: agent.PhaseRunning},
		handed.Spec.TaskID:   {TaskID: handed.Spec.TaskID, Phase: agent.PhaseRunning},
		draining.Spec.TaskID: {TaskID: draining.Spec.TaskID, Phase: agent.PhaseRunning},
	}}
	c := &Controller{Store: store, Agent: ag}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Stop()

	get := func(r *model.TaskRecord) ecstypes.Task {
		var out model.TaskRecord
		store.View(ctx, func(tx state.Tx) error {
			key, _ := taskKey(*r.Task.TaskArn)
			_, err := tx.Get(model.KindTask, key, &out)
			return err
		})
		return out.Task
	}
	if tk := get(exited); *tk.LastStatus != "STOPPED" || *tk.Containers[0].ExitCode != 7 || *tk.StopCode != "EssentialContainerExited" {
		b, _ := json.Marshal(tk)
		t.Fatalf("exited task: %s", b)
	}
	if tk := get(lost); *tk.LastStatus != "STOPPED" || tk.StoppedReason == nil {
		b, _ := json.Marshal(tk)
		t.Fatalf("lost task: %s", b)
	}
	ag.mu.Lock()
	defer ag.mu.Unlock()
	if len(ag.started) != 1 || ag.started[0] != pending.Spec.TaskID {
		t.Fatalf("handed over again: %v, want the pending task", ag.started)
	}
	slices.Sort(ag.stopping)
	if want := []string{stray, handed.Spec.TaskID}; !slices.Equal(ag.stopping, want) {
		t.Fatalf("stopped on the agent: %v, want %v (the stray task and the handed-over one, not the draining one)", ag.stopping, want)
	}
	if tk := get(draining); *tk.LastStatus != "DEACTIVATING" {
		t.Fatalf("draining task after restart: %s", *tk.LastStatus)
	}
	if len(ag.forgot) != 1 || ag.forgot[0] != exited.Spec.TaskID {
		t.Fatalf("forgotten: %v", ag.forgot)
	}
}
