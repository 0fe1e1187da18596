package cloudwatch

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/model"
	"github.com/gantry-dev/gantry/internal/state"
)

// ECS metric names and dimensions, as AWS/ECS publishes them.
const (
	NamespaceECS      = "AWS/ECS"
	CPUUtilization    = "CPUUtilization"
	MemoryUtilization = "MemoryUtilization"
	DimCluster        = "ClusterName"
	DimService        = "ServiceName"
)

// CollectInterval is how often the collector polls the agents: as often
// as the local agent samples.
const CollectInterval = 5 * time.Second

// Collector turns agents' usage samples into AWS/ECS datapoints: for each
// pass, CPUUtilization and MemoryUtilization per service (ClusterName,
// ServiceName) and per cluster (ClusterName), each a statistic set over the
// tasks' utilization as a percentage of what they reserved.
type Collector struct {
	Store   *Store
	State   state.Store
	Sources []agent.UsageSource
	Log     *slog.Logger

	mu     sync.Mutex
	seen   map[string]time.Time // task id -> time of the last sample used
	groups map[string]taskInfo  // task id -> where its datapoints go
	stop   context.CancelFunc
	done   chan struct{}
}

type taskInfo struct {
	account, region, cluster, service string
}

// Start collects every CollectInterval until Stop.
func (c *Collector) Start(ctx context.Context) {
	ctx, c.stop = context.WithCancel(ctx)
	c.done = make(chan struct{})
	go func() {
		defer close(c.done)
		t := time.NewTicker(CollectInterval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
			if err := c.Pass(ctx); err != nil && ctx.Err() == nil && c.Log != nil {
				c.Log.Warn("cloudwatch: collect", "err", err)
			}
		}
	}()
}

func (c *Collector) Stop() {
	if c.stop != nil {
		c.stop()
		<-c.done
	}
}

// Pass polls every source once and stores the new samples' datapoints.
func (c *Collector) Pass(ctx context.Context) error {
	var samples []agent.TaskUsage
	for _, src := range c.Sources {
		us, err := src.Usage(ctx)
		if err != nil {
			return err
		}
		samples = append(samples, us...)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.seen == nil {
		c.seen, c.groups = map[string]time.Time{}, map[string]taskInfo{}
	}
	live := map[string]bool{}
	var fresh []agent.TaskUsage
	for _, u := range samples {
		live[u.TaskID] = true
		if !u.Time.After(c.seen[u.TaskID]) {
			continue
		}
		c.seen[u.TaskID] = u.Time
		fresh = append(fresh, u)
	}
	for id := range c.seen {
		if !live[id] {
			delete(c.seen, id)
			delete(c.groups, id)
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	if err := c.resolve(ctx, fresh); err != nil {
		return err
	}
	type key struct{ account, region, cluster, service string }
	cpu, mem := map[key][]float64{}, map[key][]float64{}
	for _, u := range fresh {
		info, ok := c.groups[u.TaskID]
		if !ok {
			continue
		}
		keys := []key{{info.account, info.region, info.cluster, ""}}
		if info.service != "" {
			keys = append(keys, key{info.account, info.region, info.cluster, info.service})
		}
		for _, k := range keys {
			if u.HasCPU && u.CPU > 0 {
				cpu[k] = append(cpu[k], u.CPUUnits/float64(u.CPU)*100)
			}
			if u.MemoryMiB > 0 {
				mem[k] = append(mem[k], float64(u.MemoryBytes)/float64(u.MemoryMiB<<20)*100)
			}
		}
	}
	now := time.Now().UTC()
	var points []Point
	add := func(name string, vals map[key][]float64) {
		for k, vs := range vals {
			id := MetricID{Account: k.account, Region: k.region, Namespace: NamespaceECS, Name: name, Dims: []Dim{{DimCluster, k.cluster}}}
			if k.service != "" {
				id.Dims = append(id.Dims, Dim{DimService, k.service})
			}
			points = append(points, Point{Metric: id, Time: now, Unit: "Percent", Stats: Of(vs...)})
		}
	}
	add(CPUUtilization, cpu)
	add(MemoryUtilization, mem)
	return c.Store.Put(ctx, points)
}

// resolve finds the account, region, cluster and service of tasks not
// seen before, from their records.
func (c *Collector) resolve(ctx context.Context, us []agent.TaskUsage) error {
	var todo []agent.TaskUsage
	for _, u := range us {
		if _, ok := c.groups[u.TaskID]; !ok {
			todo = append(todo, u)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	return c.State.View(ctx, func(tx state.Tx) error {
		for _, u := range todo {
			// arn:aws:ecs:REGION:ACCOUNT:task/CLUSTER/ID
			parts := strings.SplitN(u.TaskARN, ":", 6)
			if len(parts) != 6 {
				continue
			}
			sc := model.Scope{Account: parts[4], Region: parts[3]}
			var rec model.TaskRecord
			ok, err := tx.Get(model.KindTask, sc.TaskKey(u.Cluster, u.TaskID), &rec)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			info := taskInfo{account: sc.Account, region: sc.Region, cluster: u.Cluster}
			if g := derefStr(rec.Task.Group); strings.HasPrefix(g, "service:") {
				info.service = strings.TrimPrefix(g, "service:")
			}
			c.groups[u.TaskID] = info
		}
		return nil
	})
}

func derefStr(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
