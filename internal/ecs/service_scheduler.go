package ecs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/model"
	"github.com/gantry-dev/gantry/internal/state"
)

// The service scheduler keeps each service's tasks in line with its
// deployments. It keeps no state of its own: every pass starts from the
// stored service and its tasks, so a restarted server (or another server on
// the same PostgreSQL) carries on where the last pass stopped.

const (
	// StopServiceScheduler is the stop code of tasks the scheduler stops.
	StopServiceScheduler = "ServiceSchedulerInitiated"

	schedulerInterval = time.Second
	// Failed starts back off exponentially from backoffBase up to
	// backoffMax, so a task definition that cannot run does not spin.
	backoffBase = time.Second
	backoffMax  = 5 * time.Minute
	// launchBatch bounds how many tasks one pass starts per service.
	launchBatch = 10
	maxEvents   = 100
	// inactiveRetention is how long a deleted service stays describable.
	inactiveRetention = time.Hour
	// drainCap bounds how long a task stays DEACTIVATING:
	// deregistration_delay.timeout_seconds is at most 3600.
	drainCap = time.Hour + time.Minute

	reasonContainerHealth = "Task failed container health checks"
)

type serviceScheduler struct {
	wake   chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// StartScheduler starts the service scheduler in the background.
func (s *Service) StartScheduler(ctx context.Context) {
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.sched = &serviceScheduler{wake: make(chan struct{}, 1), cancel: cancel}
	s.sched.wg.Add(1)
	go func() {
		defer s.sched.wg.Done()
		tick := time.NewTicker(schedulerInterval)
		defer tick.Stop()
		for {
			if err := s.schedulePass(bg); err != nil && bg.Err() == nil {
				s.logger().Warn("service scheduler pass", "err", err)
			}
			select {
			case <-bg.Done():
				return
			case <-tick.C:
			case <-s.sched.wake:
			}
		}
	}()
}

// StopScheduler ends the scheduler; a pass under way finishes first.
func (s *Service) StopScheduler() {
	if s.sched != nil {
		s.sched.cancel()
		s.sched.wg.Wait()
	}
}

func (s *Service) logger() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

// wakeScheduler runs a pass soon, so API changes take effect without
// waiting for the next tick.
func (s *Service) wakeScheduler() {
	if s.sched == nil {
		return
	}
	select {
	case s.sched.wake <- struct{}{}:
	default:
	}
}

func (s *Service) schedulePass(ctx context.Context) error {
	var keys, expired []string
	cutoff := s.now().Add(-inactiveRetention)
	err := s.Store.View(ctx, func(tx state.Tx) error {
		keys, expired = nil, nil
		return tx.Scan(model.KindService, "", "", 0, func(key string, data []byte) error {
			var r model.ServiceRecord
			if err := json.Unmarshal(data, &r); err != nil {
				return err
			}
			switch {
			case ecstypes.Deref(r.Service.Status) != "INACTIVE":
				keys = append(keys, key)
			case r.DeletedAt != nil && r.DeletedAt.Before(cutoff):
				expired = append(expired, key)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	for _, key := range keys {
		if err := s.scheduleService(ctx, key); err != nil {
			s.logger().Warn("schedule service", "service", key, "err", err)
		}
	}
	if len(expired) > 0 {
		return s.Store.Update(ctx, func(tx state.Tx) error {
			for _, key := range expired {
				if _, err := tx.Delete(model.KindService, key); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return nil
}

// scheduleService runs one pass over one service: the store is changed in
// one transaction, then the tasks it started and stopped are handed to the
// controller (which, after a crash in between, finds them on its own).
func (s *Service) scheduleService(ctx context.Context, key string) error {
	parts := strings.SplitN(key, "/", 4)
	if len(parts) != 4 {
		return fmt.Errorf("bad service key %q", key)
	}
	sc := model.Scope{Account: parts[0], Region: parts[1]}
	cluster, name := parts[2], parts[3]
	var p *pass
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		var rec model.ServiceRecord
		ok, err := tx.Get(model.KindService, key, &rec)
		if err != nil || !ok {
			return err
		}
		before, _ := json.Marshal(&rec)
		tasks, err := serviceTasks(tx, sc, cluster, name)
		if err != nil {
			return err
		}
		p = &pass{s: s, tx: tx, sc: sc, cluster: cluster, rec: &rec, tasks: tasks, now: s.now()}
		if err := p.run(); err != nil {
			return err
		}
		if after, _ := json.Marshal(&rec); string(after) == string(before) {
			return nil
		}
		return tx.Put(model.KindService, key, &rec)
	})
	if err != nil || p == nil {
		return err
	}
	if err := s.registerEvents(ctx, key, s.syncTargets(ctx, p)); err != nil {
		s.logger().Warn("services: target registration events", "service", key, "err", err)
	}
	if s.Controller != nil {
		if len(p.launched) > 0 {
			s.Controller.Launch(ctx, p.launched)
		}
		for _, r := range p.stopped {
			s.Controller.StopTask(ctx, r)
		}
	}
	return nil
}

// pass is one scheduling pass over a service.
type pass struct {
	s       *Service
	tx      state.Tx
	sc      model.Scope
	cluster string
	rec     *model.ServiceRecord
	tasks   []*model.TaskRecord
	now     time.Time

	launched, stopped []*model.TaskRecord
}

func (p *pass) svc() *ecstypes.Service { return &p.rec.Service }

func (p *pass) name() string { return ecstypes.Deref(p.svc().ServiceName) }

func (p *pass) event(format string, args ...any) { serviceEvent(p.rec, p.now, format, args...) }

// serviceEvent adds an event in ECS's words to a service.
func serviceEvent(rec *model.ServiceRecord, now time.Time, format string, args ...any) {
	svc := &rec.Service
	msg := fmt.Sprintf("(service %s) ", ecstypes.Deref(svc.ServiceName)) + fmt.Sprintf(format, args...)
	ev := &ecstypes.ServiceEvent{Id: ecstypes.String(uuid.NewString()), CreatedAt: ecstypes.At(now), Message: ecstypes.String(msg)}
	// Newest first, as DescribeServices lists them.
	evs := append([]*ecstypes.ServiceEvent{ev}, svc.Events...)
	if len(evs) > maxEvents {
		evs = evs[:maxEvents]
	}
	svc.Events = evs
}

func (p *pass) primary() *ecstypes.Deployment {
	for _, d := range p.svc().Deployments {
		if ecstypes.Deref(d.Status) == "PRIMARY" {
			return d
		}
	}
	return nil
}

// wanted is a task the service still wants: not being stopped. A
// DEACTIVATING task is not: its desiredStatus is STOPPED, so it neither
// counts towards desiredCount nor is stopped or replaced again.
func wanted(r *model.TaskRecord) bool {
	return taskLive(&r.Task) && ecstypes.Deref(r.Task.DesiredStatus) == "RUNNING"
}

func (p *pass) run() error {
	svc := p.svc()
	primary := p.primary()
	if primary == nil {
		return nil
	}
	if err := p.finishDrains(); err != nil {
		return err
	}
	if err := p.stopUnhealthy(); err != nil {
		return err
	}
	if err := p.circuitBreaker(); err != nil {
		return err
	}
	primary = p.primary()
	desired := int(ecstypes.Deref(svc.DesiredCount))
	if ecstypes.Deref(svc.Status) != "ACTIVE" {
		desired = 0
	}
	cfg := svc.DeploymentConfiguration
	maxTotal := desired * int(ecstypes.Deref(cfg.MaximumPercent)) / 100
	minHealthy := (desired*int(ecstypes.Deref(cfg.MinimumHealthyPercent)) + 99) / 100

	// Like ECS, maximumPercent bounds the tasks RUNNING or PENDING:
	// DEACTIVATING ones are on their way out and serve nothing new.
	var mine, old []*model.TaskRecord
	for _, r := range p.tasks {
		if !wanted(r) {
			continue
		}
		if ecstypes.Deref(r.Task.StartedBy) == ecstypes.Deref(primary.Id) {
			mine = append(mine, r)
		} else {
			old = append(old, r)
		}
	}
	// Tasks that serve nothing yet go first: not yet running, or (behind a
	// load balancer) not yet passing its health checks.
	byStopOrder := func(rs []*model.TaskRecord) {
		slices.SortStableFunc(rs, func(a, b *model.TaskRecord) int {
			ra, rb := p.healthy(a), p.healthy(b)
			switch {
			case ra == rb:
				return 0
			case !ra:
				return -1
			}
			return 1
		})
	}
	byStopOrder(mine)
	byStopOrder(old)
	reason := fmt.Sprintf("Scaling activity initiated by (deployment %s)", ecstypes.Deref(primary.Id))
	var stop []*model.TaskRecord
	if len(mine) > desired {
		stop = append(stop, mine[:len(mine)-desired]...)
		mine = mine[len(mine)-desired:]
	}
	healthy := 0
	for _, r := range append(slices.Clone(mine), old...) {
		if p.healthy(r) {
			healthy++
		}
	}
	for len(old) > 0 {
		r := old[0]
		if p.healthy(r) {
			if healthy-1 < minHealthy {
				break
			}
			healthy--
		}
		stop = append(stop, r)
		old = old[1:]
	}
	if err := p.stop(stop, reason); err != nil {
		return err
	}
	if n := min(desired-len(mine), maxTotal-len(mine)-len(old), launchBatch); n > 0 && p.mayLaunch() {
		if err := p.launch(primary, n); err != nil {
			return err
		}
	}
	return p.settle()
}

// stopUnhealthy replaces tasks their container health checks found
// UNHEALTHY, and tasks whose load balancer targets fail the target group's
// health checks, once the grace period since they started is over.
func (p *pass) stopUnhealthy() error {
	grace := time.Duration(ecstypes.Deref(p.svc().HealthCheckGracePeriodSeconds)) * time.Second
	var sick []*model.TaskRecord
	for _, r := range p.tasks {
		t := &r.Task
		if !wanted(r) || t.StartedAt == nil || p.now.Sub(t.StartedAt.Time) < grace {
			continue
		}
		if ecstypes.Deref(t.HealthStatus) == "UNHEALTHY" {
			sick = append(sick, r)
			continue
		}
		if !taskRunning(t) {
			continue
		}
		for _, lt := range p.lbTargets() {
			st := p.s.Targets.TargetHealth(lt.TargetGroupARN, taskIP(r), lt.Port)
			if st.State != "unhealthy" {
				continue
			}
			why := st.Description
			if why == "" {
				why = "Health checks failed"
			}
			p.event("(task %s) (port %d) is unhealthy in target-group %s due to (reason %s).", taskIDOf(r), lt.Port, tgName(lt.TargetGroupARN), why)
			reason := fmt.Sprintf("Task failed ELB health checks in (target-group %s)", lt.TargetGroupARN)
			if err := p.stop([]*model.TaskRecord{r}, reason); err != nil {
				return err
			}
			break
		}
	}
	return p.stop(sick, reasonContainerHealth)
}

// tgName is a target group's name from its ARN
// (...:targetgroup/NAME/ID), as ECS's events name it.
func tgName(arn string) string {
	_, rest, ok := strings.Cut(arn, ":targetgroup/")
	if !ok {
		return arn
	}
	name, _, _ := strings.Cut(rest, "/")
	return name
}

// lbTargets are the service's target groups, when a registrar is there
// to ask about them.
func (p *pass) lbTargets() []ServiceTarget {
	if p.s.Targets == nil {
		return nil
	}
	return lbTargets(p.svc())
}

// healthy is a task that serves: RUNNING and, behind a load balancer,
// passing the target groups' health checks. Deployments count these
// against minimumHealthyPercent, so old tasks are only taken away once new
// ones take traffic.
func (p *pass) healthy(r *model.TaskRecord) bool {
	if !taskRunning(&r.Task) {
		return false
	}
	lts := p.lbTargets()
	if len(lts) == 0 {
		return true
	}
	ip := taskIP(r)
	for _, lt := range lts {
		if p.s.Targets.TargetHealth(lt.TargetGroupARN, ip, lt.Port).State != "healthy" {
			return false
		}
	}
	return true
}

// registered is the target groups in which a task still has a target
// (healthy, draining or otherwise).
func (p *pass) registered(r *model.TaskRecord) []string {
	return registeredTargets(p.s.Targets, p.lbTargets(), taskIP(r))
}

func taskIDOf(r *model.TaskRecord) string {
	arn := ecstypes.Deref(r.Task.TaskArn)
	return arn[strings.LastIndex(arn, "/")+1:]
}

// stop records the scheduler's stop of tasks: desiredStatus STOPPED,
// stopCode ServiceSchedulerInitiated and stoppingAt at once. A RUNNING task
// with targets in the service's target groups becomes DEACTIVATING and
// keeps running: syncTargets deregisters its targets, which drain for the
// group's deregistration delay (no new requests, the ones in flight
// finish), and finishDrains hands it over once they are gone. The others
// go to the controller after the transaction.
func (p *pass) stop(rs []*model.TaskRecord, reason string) error {
	var now []*model.TaskRecord
	var groups []string
	draining := 0
	for _, r := range rs {
		t := &r.Task
		if ecstypes.Deref(t.DesiredStatus) == "STOPPED" {
			continue
		}
		running := ecstypes.Deref(t.LastStatus) == "RUNNING"
		r.StopCode, r.StoppedReason = StopServiceScheduler, reason
		t.DesiredStatus = ecstypes.String("STOPPED")
		t.StopCode = ecstypes.String(StopServiceScheduler)
		t.StoppedReason = ecstypes.String(reason)
		t.StoppingAt = ecstypes.At(p.now)
		t.Version = ecstypes.Int64(ecstypes.Deref(t.Version) + 1)
		if tgs := p.registered(r); running && len(tgs) > 0 {
			t.LastStatus = ecstypes.String("DEACTIVATING")
			draining++
			for _, tg := range tgs {
				if !slices.Contains(groups, tg) {
					groups = append(groups, tg)
				}
			}
			if err := p.put(r); err != nil {
				return err
			}
			continue
		}
		now = append(now, r)
	}
	if draining > 0 {
		drainEvents(p.rec, p.now, draining, groups)
	}
	return p.handOver(now)
}

// finishDrains hands over the DEACTIVATING tasks whose targets are gone
// (or that waited longer than any deregistration delay allows).
func (p *pass) finishDrains() error {
	var done []*model.TaskRecord
	for _, r := range p.tasks {
		t := &r.Task
		if !deactivating(t) {
			continue
		}
		if len(p.registered(r)) > 0 && (t.StoppingAt == nil || p.now.Sub(t.StoppingAt.Time) < drainCap) {
			continue
		}
		done = append(done, r)
	}
	return p.handOver(done)
}

// handOver stores tasks whose stop is recorded and queues them for the
// controller. A drained task moves on to STOPPING here, so no later pass
// hands it over again; the controller repeats stops that did not reach
// the agent.
func (p *pass) handOver(rs []*model.TaskRecord) error {
	var ids []string
	for _, r := range rs {
		t := &r.Task
		if deactivating(t) {
			t.LastStatus = ecstypes.String("STOPPING")
			t.Version = ecstypes.Int64(ecstypes.Deref(t.Version) + 1)
		}
		if err := p.put(r); err != nil {
			return err
		}
		p.stopped = append(p.stopped, r)
		// A user's StopTask says nothing in the service's events.
		if r.StopCode != StopServiceScheduler {
			continue
		}
		if r.StoppedReason == reasonContainerHealth {
			p.event("has stopped 1 running tasks: (task %s). Reason: %s.", taskIDOf(r), reasonContainerHealth)
			continue
		}
		ids = append(ids, "(task "+taskIDOf(r)+")")
	}
	if len(ids) > 0 {
		p.event("has stopped %d running tasks: %s.", len(ids), strings.Join(ids, " "))
	}
	return nil
}

func (p *pass) put(r *model.TaskRecord) error {
	return p.tx.Put(model.KindTask, p.sc.TaskKey(p.cluster, taskIDOf(r)), r)
}

// failures are the service's failed tasks since its failure count was
// last reset, and when the latest of them stopped.
func (p *pass) failures() (int, time.Time) {
	n, last := 0, time.Time{}
	for _, r := range p.tasks {
		if !taskFailed(r) || r.Task.StoppedAt == nil {
			continue
		}
		at := r.Task.StoppedAt.Time
		if p.rec.FailuresSince != nil && !at.After(p.rec.FailuresSince.Time) {
			continue
		}
		n++
		if at.After(last) {
			last = at
		}
	}
	return n, last
}

// mayLaunch applies the back-off after failed starts.
func (p *pass) mayLaunch() bool {
	n, last := p.failures()
	if n == 0 {
		return true
	}
	delay := backoffMax
	if n <= 20 {
		delay = min(backoffBase<<(n-1), backoffMax)
	}
	if n >= 3 && !p.rec.Throttled {
		p.rec.Throttled = true
		p.event("is unable to consistently start tasks successfully. For more information, see the Troubleshooting section of the Amazon ECS Developer Guide.")
	}
	return !p.now.Before(last.Add(delay))
}

func (p *pass) launch(d *ecstypes.Deployment, n int) error {
	svc := p.svc()
	in := &ecstypes.RunTaskRequest{
		Cluster:                  ecstypes.String(p.cluster),
		TaskDefinition:           d.TaskDefinition,
		Count:                    ecstypes.Int32(int32(n)),
		LaunchType:               d.LaunchType,
		CapacityProviderStrategy: d.CapacityProviderStrategy,
		NetworkConfiguration:     d.NetworkConfiguration,
		StartedBy:                d.Id,
		Group:                    ecstypes.String(serviceGroup(p.name())),
		EnableECSManagedTags:     svc.EnableECSManagedTags,
		EnableExecuteCommand:     svc.EnableExecuteCommand,
	}
	switch ecstypes.Deref(svc.PropagateTags) {
	case "TASK_DEFINITION":
		in.PropagateTags = svc.PropagateTags
	case "SERVICE":
		tags, err := ResourceTags(p.tx, ecstypes.Deref(svc.ServiceArn))
		if err != nil {
			return err
		}
		in.Tags = tags
	}
	recs, failures, err := p.s.newTasks(p.tx, p.sc, in)
	if err == nil && len(failures) > 0 {
		err = fmt.Errorf("%s", ecstypes.Deref(failures[0].Reason))
	}
	if err != nil {
		// Not a task failure (the task definition or subnet went away, say):
		// said once, and tried again on the next pass.
		reason := err.Error()
		if ae := (*awsapi.Error)(nil); errors.As(err, &ae) {
			reason = ae.Message
		}
		reason = strings.TrimSuffix(reason, ".")
		msg := fmt.Sprintf("was unable to place a task. Reason: %s.", reason)
		if strings.HasPrefix(reason, "ECS was unable to assume the role") {
			// ECS's wording for a launch the task role refused.
			msg = fmt.Sprintf("failed to launch a task with (error %s).", reason)
		}
		if evs := svc.Events; len(evs) == 0 || !strings.HasSuffix(ecstypes.Deref(evs[0].Message), msg) {
			p.event("%s", msg)
		}
		return nil
	}
	var ids []string
	for _, r := range recs {
		ids = append(ids, "(task "+taskIDOf(r)+")")
		p.tasks = append(p.tasks, r)
	}
	p.launched = append(p.launched, recs...)
	p.event("has started %d tasks: %s.", len(recs), strings.Join(ids, " "))
	p.rec.Steady = false
	return nil
}

// circuitBreakerThreshold is ECS's: half the desired count, at least 3 and
// at most 200 failed tasks.
func circuitBreakerThreshold(desired int32) int32 {
	return min(max((desired+1)/2, 3), 200)
}

// circuitBreaker fails a primary deployment whose tasks keep failing and,
// with rollback, starts a deployment of the last completed one.
func (p *pass) circuitBreaker() error {
	svc := p.svc()
	d := p.primary()
	cb := svc.DeploymentConfiguration.DeploymentCircuitBreaker
	if cb == nil || !ecstypes.Deref(cb.Enable) || ecstypes.Deref(d.RolloutState) != "IN_PROGRESS" || ecstypes.Deref(svc.Status) != "ACTIVE" {
		return nil
	}
	var failed int32
	for _, r := range p.tasks {
		if taskFailed(r) && ecstypes.Deref(r.Task.StartedBy) == ecstypes.Deref(d.Id) {
			failed++
		}
	}
	if failed < circuitBreakerThreshold(ecstypes.Deref(svc.DesiredCount)) {
		return nil
	}
	d.RolloutState = ecstypes.String("FAILED")
	d.RolloutStateReason = ecstypes.String("ECS deployment circuit breaker: tasks failed to start.")
	d.UpdatedAt = ecstypes.At(p.now)
	p.event("(deployment %s) deployment failed: tasks failed to start.", ecstypes.Deref(d.Id))
	good := p.rec.LastCompleted
	if !ecstypes.Deref(cb.Rollback) || good == nil {
		return nil
	}
	if td, err := model.GetTaskDefinition(p.tx, p.sc, ecstypes.Deref(good.TaskDefinition)); err != nil || td == nil {
		return err
	}
	svc.TaskDefinition = good.TaskDefinition
	svc.NetworkConfiguration = good.NetworkConfiguration
	if good.LaunchType != nil || len(good.CapacityProviderStrategy) > 0 {
		svc.LaunchType, svc.CapacityProviderStrategy = good.LaunchType, good.CapacityProviderStrategy
	}
	nd := startDeployment(p.rec, p.now)
	nd.RolloutStateReason = ecstypes.String(fmt.Sprintf("ECS deployment circuit breaker: rolling back to deploymentId %s.", ecstypes.Deref(good.Id)))
	p.event("(deployment %s) rolling back to deployment %s.", ecstypes.Deref(d.Id), ecstypes.Deref(good.Id))
	// The rollback starts at once: the failures were the broken revision's.
	p.rec.FailuresSince, p.rec.Throttled = ecstypes.At(p.now), false
	return nil
}

// settle drops drained deployments, completes the primary one, notes
// steady states and finishes deleting a drained service.
func (p *pass) settle() error {
	svc := p.svc()
	live := map[string]int{}
	running, pending := 0, 0
	for _, r := range p.tasks {
		if taskLive(&r.Task) {
			live[ecstypes.Deref(r.Task.StartedBy)]++
		}
		switch {
		case taskRunning(&r.Task):
			running++
		case taskPending(&r.Task):
			pending++
		}
	}
	primary := p.primary()
	svc.Deployments = slices.DeleteFunc(svc.Deployments, func(d *ecstypes.Deployment) bool {
		return d != primary && live[ecstypes.Deref(d.Id)] == 0
	})
	if ecstypes.Deref(svc.Status) == "DRAINING" {
		if len(live) == 0 {
			svc.Status = ecstypes.String("INACTIVE")
			p.rec.DeletedAt = ecstypes.At(p.now)
			return DeleteResourceTags(p.tx, ecstypes.Deref(svc.ServiceArn))
		}
		return nil
	}
	total := 0
	for _, n := range live {
		total += n
	}
	steady := len(svc.Deployments) == 1 && pending == 0 && running == int(ecstypes.Deref(svc.DesiredCount)) && total == running
	if !steady {
		p.rec.Steady = false
		return nil
	}
	if ecstypes.Deref(primary.RolloutState) == "IN_PROGRESS" {
		primary.RolloutState = ecstypes.String("COMPLETED")
		primary.RolloutStateReason = ecstypes.String(fmt.Sprintf("ECS deployment %s completed.", ecstypes.Deref(primary.Id)))
		primary.UpdatedAt = ecstypes.At(p.now)
		p.event("(deployment %s) deployment completed.", ecstypes.Deref(primary.Id))
		done := *primary
		p.rec.LastCompleted = &done
	}
	if !p.rec.Steady {
		p.rec.Steady = true
		p.rec.FailuresSince, p.rec.Throttled = ecstypes.At(p.now), false
		p.event("has reached a steady state.")
	}
	return nil
}
