// Package controller is the control plane's task lifecycle: it places tasks
// on agents, turns agent reports into ECS task states, and reconciles after
// restarts.
package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/model"
	"github.com/gantry-dev/gantry/internal/state"
)

// Stop codes the control plane sets itself.
const (
	StopUserInitiated = "UserInitiated"
	// StopHostLost: the task's host no longer knows the task (its state was
	// lost), the nearest of ECS's codes for "the capacity went away".
	StopHostLost = "TerminationNotice"
)

// KindRunToken keeps RunTask client tokens: {taskArns, createdAt} under
// Scope.Prefix()+cluster+"/"+token. Pruned with the tasks they started.
const KindRunToken = "ecs.runtoken"

// Controller drives tasks from RunTask to STOPPED.
type Controller struct {
	Store state.Store
	Agent agent.Agent // one host for now; placement picks among several later
	Log   *slog.Logger
	// Retention is how long STOPPED tasks stay describable (default 1h, as
	// ECS keeps them at least an hour).
	Retention time.Duration
	// Resync is how often agent state is re-read to repair lost reports
	// (default 15s).
	Resync time.Duration

	mu     sync.Mutex
	hostID string
	arns   map[string]string // task id -> ARN, to find a report's record
	// last is each task's last stored report, so resync skips the
	// unchanged; stopping marks stops sent, which resync repeats until
	// the agent acts on them.
	last     map[string]string
	stopping map[string]bool
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	fwOnce sync.Once
	fwKick chan struct{} // see FirewallChanged
}

func (c *Controller) log() *slog.Logger {
	if c.Log != nil {
		return c.Log
	}
	return slog.Default()
}

// Start resumes work after a restart: it reconciles stored tasks with what
// the agent reports, then keeps them in step in the background.
func (c *Controller) Start(ctx context.Context) error {
	if c.Agent != nil {
		if info, err := c.Agent.Info(ctx); err == nil && info.ID != "" {
			c.mu.Lock()
			c.hostID = info.ID
			c.mu.Unlock()
		}
	}
	if err := c.reconcile(ctx); err != nil {
		return fmt.Errorf("reconcile tasks: %w", err)
	}
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel = cancel
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		c.loop(bg)
	}()
	go func() {
		defer c.wg.Done()
		c.firewallLoop(bg, c.resyncEvery())
	}()
	c.FirewallChanged()
	return nil
}

// Stop ends the controller's background work.
func (c *Controller) Stop() {
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait()
}

func (c *Controller) loop(ctx context.Context) {
	tick := time.NewTicker(c.resyncEvery())
	defer tick.Stop()
	lastPrune := time.Time{}
	for {
		if time.Since(lastPrune) > time.Minute {
			if err := c.prune(ctx); err != nil && ctx.Err() == nil {
				c.log().Warn("prune stopped tasks", "err", err)
			}
			lastPrune = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if err := c.resync(ctx); err != nil && ctx.Err() == nil {
			c.log().Warn("resync tasks with agent", "err", err)
		}
	}
}

func (c *Controller) resyncEvery() time.Duration {
	if c.Resync <= 0 {
		return 15 * time.Second
	}
	return c.Resync
}

// Place picks the host for a new task and returns its id, to be stored in
// TaskRecord.Host. With one agent that is simply the local host.
func (c *Controller) Place(spec *agent.TaskSpec) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hostID == "" {
		return "local"
	}
	return c.hostID
}

// agentFor returns the agent on host; nil when there is none (yet).
func (c *Controller) agentFor(host string) agent.Agent { return c.Agent }

func (c *Controller) remember(arn string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.arns == nil {
		c.arns = map[string]string{}
	}
	c.arns[TaskID(arn)] = arn
}

func (c *Controller) forgetID(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.arns, id)
	delete(c.last, id)
	delete(c.stopping, id)
}

func statusKey(st agent.TaskStatus) string {
	b, _ := json.Marshal(st)
	return string(b)
}

// unchanged reports whether st is what was last stored for its task (and
// no stop is outstanding).
func (c *Controller) unchanged(st agent.TaskStatus) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.stopping[st.TaskID] && c.last[st.TaskID] == statusKey(st)
}

func (c *Controller) stored(st agent.TaskStatus) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil {
		c.last = map[string]string{}
	}
	c.last[st.TaskID] = statusKey(st)
}

func (c *Controller) markStopping(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopping == nil {
		c.stopping = map[string]bool{}
	}
	c.stopping[id] = true
}

// keyFor finds where the task with id is stored: from memory, or by a scan
// when the task was started by another server sharing the store.
func (c *Controller) keyFor(tx state.Tx, id string) (string, error) {
	c.mu.Lock()
	arn := c.arns[id]
	c.mu.Unlock()
	if key, ok := taskKey(arn); ok {
		return key, nil
	}
	var found string
	err := tx.Scan(model.KindTask, "", "", 0, func(key string, _ []byte) error {
		if strings.HasSuffix(key, "/"+id) {
			found = key
			return state.ErrStop
		}
		return nil
	})
	return found, err
}

// Launch hands freshly stored tasks to their agents. A task the agent
// refuses is stopped at once with TaskFailedToStart. It returns the
// records as they are now.
func (c *Controller) Launch(ctx context.Context, recs []*model.TaskRecord) []*model.TaskRecord {
	ctx = context.WithoutCancel(ctx)
	// The new tasks' groups reach the agent while it pulls images, before
	// their networks exist.
	c.FirewallChanged()
	for i, rec := range recs {
		c.remember(ecstypes.Deref(rec.Task.TaskArn))
		ag := c.agentFor(rec.Host)
		err := errors.New("no agent is available")
		if ag != nil && rec.Spec != nil {
			err = ag.StartTask(ctx, *rec.Spec)
		}
		if err == nil {
			continue
		}
		c.log().Warn("agent refused task", "task", ecstypes.Deref(rec.Task.TaskArn), "err", err)
		if updated, uerr := c.update(ctx, ecstypes.Deref(rec.Task.TaskArn), func(r *model.TaskRecord) bool {
			return markStopped(r, agent.StopFailedToStart, "Task failed to start: "+err.Error(), time.Now())
		}); uerr == nil && updated != nil {
			recs[i] = updated
		}
	}
	return recs
}

// StopTask asks the task's agent to stop a task whose stop was recorded
// (desiredStatus STOPPED). A task its agent does not know is ended here.
func (c *Controller) StopTask(ctx context.Context, rec *model.TaskRecord) *model.TaskRecord {
	ctx = context.WithoutCancel(ctx)
	arn := ecstypes.Deref(rec.Task.TaskArn)
	id := TaskID(arn)
	ag := c.agentFor(rec.Host)
	if ag != nil {
		c.markStopping(id)
		err := ag.StopTask(ctx, agent.StopRequest{TaskID: id, Reason: rec.StoppedReason})
		if err == nil {
			return rec
		}
		if known, kerr := agentKnows(ctx, ag, id); kerr != nil || known {
			c.log().Warn("stop task", "task", arn, "err", err)
			return rec
		}
	}
	updated, err := c.update(ctx, arn, func(r *model.TaskRecord) bool {
		return markStopped(r, StopUserInitiated, r.StoppedReason, time.Now())
	})
	if err != nil || updated == nil {
		return rec
	}
	return updated
}

func agentKnows(ctx context.Context, ag agent.Agent, id string) (bool, error) {
	sts, err := ag.Tasks(ctx)
	if err != nil {
		return false, err
	}
	for _, st := range sts {
		if st.TaskID == id {
			return true, nil
		}
	}
	return false, nil
}

// TaskChanged records an agent's report.
func (c *Controller) TaskChanged(ctx context.Context, st agent.TaskStatus) {
	if _, err := c.report(ctx, st); err != nil {
		c.log().Warn("record task status", "task", st.TaskID, "phase", st.Phase, "err", err)
	}
}

// report stores st and returns the task's record (nil when the store has no
// such task).
func (c *Controller) report(ctx context.Context, st agent.TaskStatus) (*model.TaskRecord, error) {
	var rec *model.TaskRecord
	membership := false
	err := c.Store.Update(ctx, func(tx state.Tx) error {
		rec, membership = nil, false
		key, err := c.keyFor(tx, st.TaskID)
		if err != nil || key == "" {
			return err
		}
		var r model.TaskRecord
		if ok, err := tx.Get(model.KindTask, key, &r); err != nil || !ok {
			return err
		}
		rec = &r
		before := firewallMember(&r)
		if Apply(&r, st, time.Now()) {
			membership = firewallMember(&r) != before
			return tx.Put(model.KindTask, key, &r)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if membership {
		// A new address or a task gone changes group membership. Other
		// reports leave it as it was: recomputing it reads every task.
		c.FirewallChanged()
	}
	if rec != nil {
		c.stored(st)
	}
	ag := c.agentFor("")
	if rec != nil {
		ag = c.agentFor(rec.Host)
	}
	if ag == nil {
		return rec, nil
	}
	switch {
	case st.Phase == agent.PhaseStopped:
		// Only now that STOPPED (with exit codes) is stored may the agent
		// drop its record.
		if err := ag.Forget(ctx, st.TaskID); err != nil {
			c.log().Warn("forget task", "task", st.TaskID, "err", err)
		}
		c.forgetID(st.TaskID)
	case rec == nil:
		// The agent runs something the control plane has no record of
		// (deleted state, a crash between agent start and store): stop it
		// rather than leak it.
		c.log().Warn("stopping task unknown to the control plane", "task", st.TaskID)
		if st.Phase != agent.PhaseStopping {
			ag.StopTask(ctx, agent.StopRequest{TaskID: st.TaskID, Reason: "unknown to the control plane"})
		}
	}
	return rec, nil
}

// update applies fn to the stored task with arn and stores it when fn
// reports a change. It returns the record (nil when there is none).
func (c *Controller) update(ctx context.Context, arn string, fn func(*model.TaskRecord) bool) (*model.TaskRecord, error) {
	key, ok := taskKey(arn)
	if !ok {
		return nil, fmt.Errorf("bad task ARN %q", arn)
	}
	var rec *model.TaskRecord
	err := c.Store.Update(ctx, func(tx state.Tx) error {
		rec = nil
		var r model.TaskRecord
		if ok, err := tx.Get(model.KindTask, key, &r); err != nil || !ok {
			return err
		}
		rec = &r
		if fn(&r) {
			return tx.Put(model.KindTask, key, &r)
		}
		return nil
	})
	return rec, err
}

// resync re-reads every task from the agent: reports lost on the way are
// repaired, and stops that did not reach the agent are sent again.
func (c *Controller) resync(ctx context.Context) error {
	ag := c.agentFor("")
	if ag == nil {
		return nil
	}
	sts, err := ag.Tasks(ctx)
	if err != nil {
		return err
	}
	for _, st := range sts {
		if c.unchanged(st) {
			continue
		}
		rec, err := c.report(ctx, st)
		if err != nil {
			return err
		}
		if st.Phase == agent.PhaseStopping {
			c.mu.Lock()
			delete(c.stopping, st.TaskID)
			c.mu.Unlock()
		}
		// A DEACTIVATING task keeps running until its load balancer
		// targets have drained; the service scheduler stops it then.
		if rec != nil && rec.StopCode != "" && ecstypes.Deref(rec.Task.LastStatus) != "DEACTIVATING" && (st.Phase == agent.PhasePending || st.Phase == agent.PhaseRunning) {
			ag.StopTask(ctx, agent.StopRequest{TaskID: st.TaskID, Reason: rec.StoppedReason})
		}
	}
	return nil
}

// reconcile brings the store in line with the agent after a restart: the
// agent's reports are applied (tasks that ended meanwhile get their real
// exit codes), tasks never handed over are handed over again, and tasks the
// agent no longer knows are stopped.
func (c *Controller) reconcile(ctx context.Context) error {
	ag := c.agentFor("")
	if ag == nil {
		return nil
	}
	sts, err := ag.Tasks(ctx)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, st := range sts {
		known[st.TaskID] = true
	}
	var live []model.TaskRecord
	err = c.Store.View(ctx, func(tx state.Tx) error {
		all, err := state.List[model.TaskRecord](tx, model.KindTask, "")
		for _, r := range all {
			if ecstypes.Deref(r.Task.LastStatus) != "STOPPED" {
				live = append(live, r)
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	for _, r := range live {
		c.remember(ecstypes.Deref(r.Task.TaskArn))
	}
	if err := c.resync(ctx); err != nil {
		return err
	}
	for i := range live {
		r := &live[i]
		arn := ecstypes.Deref(r.Task.TaskArn)
		if known[TaskID(arn)] {
			continue
		}
		if r.StopCode == "" && r.Task.PullStartedAt == nil && ecstypes.Deref(r.Task.LastStatus) == "PROVISIONING" && r.Spec != nil {
			// Stored but possibly never handed over (the server stopped in
			// between): hand it over now.
			c.Launch(ctx, []*model.TaskRecord{r})
			continue
		}
		code, reason := StopHostLost, "Task stopped because its host no longer has it (the agent's state was lost)"
		if r.StopCode != "" {
			code, reason = r.StopCode, r.StoppedReason
		}
		if _, err := c.update(ctx, arn, func(rec *model.TaskRecord) bool {
			return markStopped(rec, code, reason, time.Now())
		}); err != nil {
			return err
		}
		c.forgetID(TaskID(arn))
	}
	return nil
}

// prune deletes tasks stopped longer ago than the retention, with their tags.
func (c *Controller) prune(ctx context.Context) error {
	keep := c.Retention
	if keep <= 0 {
		keep = time.Hour
	}
	cutoff := time.Now().Add(-keep)
	return c.Store.Update(ctx, func(tx state.Tx) error {
		var old []string
		var arns []string
		err := tx.Scan(model.KindTask, "", "", 0, func(key string, data []byte) error {
			var r struct {
				Task struct {
					TaskArn   string         `json:"taskArn"`
					StoppedAt *ecstypes.Time `json:"stoppedAt"`
				} `json:"task"`
			}
			if err := json.Unmarshal(data, &r); err != nil {
				return err
			}
			if r.Task.StoppedAt != nil && r.Task.StoppedAt.Before(cutoff) {
				old = append(old, key)
				arns = append(arns, r.Task.TaskArn)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for i, key := range old {
			if _, err := tx.Delete(model.KindTask, key); err != nil {
				return err
			}
			if _, err := tx.Delete(model.KindTags, arns[i]); err != nil {
				return err
			}
		}
		var tokens []string
		err = tx.Scan(KindRunToken, "", "", 0, func(key string, data []byte) error {
			var tok struct {
				CreatedAt ecstypes.Time `json:"createdAt"`
			}
			if err := json.Unmarshal(data, &tok); err != nil {
				return err
			}
			if tok.CreatedAt.Before(cutoff) {
				tokens = append(tokens, key)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, key := range tokens {
			if _, err := tx.Delete(KindRunToken, key); err != nil {
				return err
			}
		}
		return nil
	})
}
