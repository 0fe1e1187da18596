// Package metrics is Gantry's Prometheus instrumentation, served as
// GET /metrics on the API listener: API latency per operation, tasks by
// state, task launches and failures, and image pull durations.
//
// Task counters come from wrapping the agent boundary (StartTask, and the
// Reporter's status reports) rather than from hooks inside the controller,
// so they count what reached a host, and work unchanged for remote agents.
package metrics

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gantry-dev/gantry/internal/agent"
)

type Metrics struct {
	reg        *prometheus.Registry
	apiLatency *prometheus.HistogramVec
	launches   prometheus.Counter
	failures   *prometheus.CounterVec
	pulls      prometheus.Histogram

	mu       sync.Mutex
	launched map[string]bool // tasks counted, until Forget
	ended    map[string]bool // tasks whose end was counted
	pulled   map[string]bool // tasks whose pull time was observed
}

func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		apiLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gantry_api_request_duration_seconds",
			Help:    "Time to answer AWS API requests, by service, operation and HTTP status.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 10),
		}, []string{"service", "operation", "code"}),
		launches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gantry_task_launches_total",
			Help: "Tasks handed to an agent to start.",
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gantry_task_failures_total",
			Help: "Tasks that ended without being asked to, by stop code (TaskFailedToStart, EssentialContainerExited).",
		}, []string{"stop_code"}),
		pulls: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gantry_image_pull_duration_seconds",
			Help:    "Time from a task's first image pull starting to its last one finishing.",
			Buckets: prometheus.ExponentialBuckets(0.01, 3, 10),
		}),
		launched: map[string]bool{}, ended: map[string]bool{}, pulled: map[string]bool{},
	}
	m.reg.MustRegister(m.apiLatency, m.launches, m.failures, m.pulls,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in Prometheus's text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// ObserveAPI records one answered API request.
func (m *Metrics) ObserveAPI(service, operation, code string, elapsed time.Duration) {
	m.apiLatency.WithLabelValues(service, operation, code).Observe(elapsed.Seconds())
}

// Register adds collectors that live with what they count (the agent's
// log capture).
func (m *Metrics) Register(cs ...prometheus.Collector) { m.reg.MustRegister(cs...) }

// WatchTasks exports gantry_tasks{state} from a's task list at each scrape.
func (m *Metrics) WatchTasks(a agent.Agent) {
	m.reg.MustRegister(&taskStates{a: a, desc: prometheus.NewDesc("gantry_tasks", "Tasks the agents know, by agent phase.", []string{"state"}, nil)})
}

type taskStates struct {
	a    agent.Agent
	desc *prometheus.Desc
}

func (c *taskStates) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *taskStates) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ts, err := c.a.Tasks(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	n := map[string]int{agent.PhasePending: 0, agent.PhaseRunning: 0, agent.PhaseStopping: 0, agent.PhaseStopped: 0}
	for _, t := range ts {
		n[t.Phase]++
	}
	for state, v := range n {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(v), state)
	}
}

// Agent wraps a so that task launches are counted, once per task id even
// when the controller retries StartTask.
func (m *Metrics) Agent(a agent.Agent) agent.Agent { return &countingAgent{Agent: a, m: m} }

type countingAgent struct {
	agent.Agent
	m *Metrics
}

func (c *countingAgent) StartTask(ctx context.Context, spec agent.TaskSpec) error {
	err := c.Agent.StartTask(ctx, spec)
	if err == nil {
		c.m.mu.Lock()
		if !c.m.launched[spec.TaskID] {
			c.m.launched[spec.TaskID] = true
			c.m.launches.Inc()
		}
		c.m.mu.Unlock()
	}
	return err
}

func (c *countingAgent) Forget(ctx context.Context, taskID string) error {
	err := c.Agent.Forget(ctx, taskID)
	if err == nil {
		c.m.mu.Lock()
		delete(c.m.launched, taskID)
		delete(c.m.ended, taskID)
		delete(c.m.pulled, taskID)
		c.m.mu.Unlock()
	}
	return err
}

// Reporter wraps r to observe pull durations and failed tasks in the
// agents' reports; reports repeat, so each task counts once.
func (m *Metrics) Reporter(r agent.Reporter) agent.Reporter { return &watchingReporter{next: r, m: m} }

type watchingReporter struct {
	next agent.Reporter
	m    *Metrics
}

func (w *watchingReporter) TaskChanged(ctx context.Context, st agent.TaskStatus) {
	m := w.m
	m.mu.Lock()
	if st.PullStartedAt != nil && st.PullStoppedAt != nil && !m.pulled[st.TaskID] {
		m.pulled[st.TaskID] = true
		m.pulls.Observe(st.PullStoppedAt.Sub(*st.PullStartedAt).Seconds())
	}
	if st.StopCode != "" && !m.ended[st.TaskID] {
		m.ended[st.TaskID] = true
		m.failures.WithLabelValues(st.StopCode).Inc()
	}
	m.mu.Unlock()
	w.next.TaskChanged(ctx, st)
}
