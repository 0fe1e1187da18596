package images

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/errdefs"
	cimages "github.com/containerd/containerd/images"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/platforms"
	"github.com/dustin/go-humanize"
	"github.com/opencontainers/image-spec/identity"
)

// The image cache is containerd's image store in Gantry's namespace. Each
// image carries the time a task (or `gantry image pull`) last asked for it
// as a label, so least-recently-used eviction survives restarts and sees
// what every process on the host did.
const (
	LabelLastUsed = "gantry.dev/last-used"
	// labelBudget, on the namespace, is the server's --image-cache-budget,
	// so `gantry image pull` keeps to the same budget as the server.
	labelBudget = "gantry.dev/image-cache-budget"
	// labelRegistry, on the namespace, is the address of the server's own
	// registry, so `gantry image pull` can reach it.
	labelRegistry = "gantry.dev/registry"
)

// DefaultBudget is the image cache's default disk budget.
const DefaultBudget = 20 << 30

// pins are images this process handed to a task in the last pinFor: the
// task's container may not exist yet, and evicting the image under it
// would fail its start.
var (
	pinsMu sync.Mutex
	pins   = map[string]time.Time{}
)

const pinFor = 2 * time.Minute

// used records that img was just asked for.
func used(ctx context.Context, client *containerd.Client, img containerd.Image) {
	now := time.Now()
	pinsMu.Lock()
	pins[img.Name()] = now
	for n, t := range pins {
		if now.Sub(t) > pinFor {
			delete(pins, n)
		}
	}
	pinsMu.Unlock()
	rec := img.Metadata()
	if rec.Labels == nil {
		rec.Labels = map[string]string{}
	}
	rec.Labels[LabelLastUsed] = now.UTC().Format(time.RFC3339Nano)
	// Off the task's start path, and best effort: a lost stamp only makes
	// eviction's order less exact (the pin above covers the next minutes).
	ctx = context.WithoutCancel(ctx)
	stamping.Add(1)
	go func() {
		defer stamping.Done()
		client.ImageService().Update(ctx, rec, "labels."+LabelLastUsed)
	}()
}

// stamping lets a short-lived process (`gantry image pull`) wait for its
// last-use stamps before it exits.
var stamping sync.WaitGroup

// Flush waits for last-use stamps still being written.
func Flush() { stamping.Wait() }

func pinned(name string) bool {
	pinsMu.Lock()
	defer pinsMu.Unlock()
	t, ok := pins[name]
	return ok && time.Since(t) < pinFor
}

// Cached is one image in the cache.
type Cached struct {
	Name     string
	Digest   string
	Size     int64     // compressed: manifest, config and layers for this host's platform
	Unpacked int64     // its layers' snapshots on disk
	LastUsed time.Time // zero: never used by a task or a pull since Gantry kept track
	Created  time.Time
	UsedBy   []string // ids of the tasks whose containers use it
}

// ErrNotCached is an image the cache does not hold.
var ErrNotCached = errors.New("not cached")

// InUseError is an image a task still uses.
type InUseError struct {
	Name  string
	Tasks []string
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("image %s is used by running task %s; stop the task first (aws ecs stop-task)", e.Name, strings.Join(e.Tasks, ", "))
}

// users maps image names to the tasks whose containers use them.
func users(ctx context.Context, client *containerd.Client) (map[string][]string, error) {
	cs, err := client.ContainerService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	out := map[string][]string{}
	for _, c := range cs {
		if c.Image == "" {
			continue
		}
		task := c.Labels["gantry.task"]
		if task == "" {
			task = c.ID
		}
		if !contains(out[c.Image], task) {
			out[c.Image] = append(out[c.Image], task)
		}
	}
	return out, nil
}

func contains(l []string, s string) bool {
	for _, v := range l {
		if v == s {
			return true
		}
	}
	return false
}

// List returns the cached images, most recently used first.
func List(ctx context.Context, client *containerd.Client) ([]Cached, error) {
	ctx = withNamespace(ctx)
	recs, err := client.ImageService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	inUse, err := users(ctx, client)
	if err != nil {
		return nil, err
	}
	cs := client.ContentStore()
	sn := client.SnapshotService(Snapshotter)
	out := make([]Cached, 0, len(recs))
	for _, r := range recs {
		c := Cached{Name: r.Name, Digest: r.Target.Digest.String(), Created: r.CreatedAt, UsedBy: inUse[r.Name]}
		if t, err := time.Parse(time.RFC3339Nano, r.Labels[LabelLastUsed]); err == nil {
			c.LastUsed = t
		}
		img := containerd.NewImageWithPlatform(client, r, platforms.Only(platforms.DefaultSpec()))
		c.Size, _ = img.Size(ctx)
		c.Unpacked = unpackedSize(ctx, cs, sn, img)
		out = append(out, c)
	}
	sort.SliceStable(out, func(i, j int) bool { return lastUse(out[i]).After(lastUse(out[j])) })
	return out, nil
}

// lastUse orders images never stamped by when they arrived.
func lastUse(c Cached) time.Time {
	if !c.LastUsed.IsZero() {
		return c.LastUsed
	}
	return c.Created
}

// unpackedSize adds up the snapshots of the image's layers.
func unpackedSize(ctx context.Context, cs content.Store, sn snapshots.Snapshotter, img containerd.Image) int64 {
	diffs, err := img.RootFS(ctx)
	if err != nil {
		return 0
	}
	var total int64
	for i := range diffs {
		chain := identity.ChainID(diffs[:i+1]).String()
		if u, err := sn.Usage(ctx, chain); err == nil {
			total += u.Size
		}
	}
	return total
}

// DiskUsage is what the cache holds on disk: every blob in Gantry's
// namespace and every committed snapshot (image layers; tasks' writable
// layers live on their own file systems).
func DiskUsage(ctx context.Context, client *containerd.Client) (int64, error) {
	ctx = withNamespace(ctx)
	var total int64
	if err := client.ContentStore().Walk(ctx, func(i content.Info) error {
		total += i.Size
		return nil
	}); err != nil {
		return 0, fmt.Errorf("walk content: %w", err)
	}
	sn := client.SnapshotService(Snapshotter)
	if err := sn.Walk(ctx, func(ctx context.Context, i snapshots.Info) error {
		if i.Kind != snapshots.KindCommitted {
			return nil
		}
		if u, err := sn.Usage(ctx, i.Name); err == nil {
			total += u.Size
		}
		return nil
	}); err != nil {
		return 0, fmt.Errorf("walk snapshots: %w", err)
	}
	return total, nil
}

// Remove deletes an image from the cache unless a task uses it. Blobs and
// layers no other image shares go with it.
func Remove(ctx context.Context, client *containerd.Client, ref string) error {
	ctx = withNamespace(ctx)
	name, err := Normalize(ref)
	if err != nil {
		return err
	}
	if _, err := client.ImageService().Get(ctx, name); errdefs.IsNotFound(err) {
		if _, err2 := client.ImageService().Get(ctx, ref); err2 != nil {
			return fmt.Errorf("no image %s in the cache (gantry image ls lists them): %w", name, ErrNotCached)
		}
		name = ref
	} else if err != nil {
		return err
	}
	inUse, err := users(ctx, client)
	if err != nil {
		return err
	}
	if tasks := inUse[name]; len(tasks) > 0 {
		return &InUseError{Name: name, Tasks: tasks}
	}
	if err := client.ImageService().Delete(ctx, name, cimages.SynchronousDelete()); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("remove %s: %w", name, err)
	}
	return nil
}

// Evict removes least recently used images no task uses until the cache
// holds at most budget bytes, keeping keep (the image just pulled) and
// images this process just handed to a task. It returns what it removed.
func Evict(ctx context.Context, client *containerd.Client, budget int64, keep ...string) ([]Cached, error) {
	ctx = withNamespace(ctx)
	evictMu.Lock()
	defer evictMu.Unlock()
	usage, err := DiskUsage(ctx, client)
	if err != nil || usage <= budget {
		return nil, err
	}
	all, err := List(ctx, client)
	if err != nil {
		return nil, err
	}
	var removed []Cached
	for i := len(all) - 1; i >= 0 && usage > budget; i-- {
		c := all[i]
		if len(c.UsedBy) > 0 || contains(keep, c.Name) || pinned(c.Name) {
			continue
		}
		if err := Remove(ctx, client, c.Name); err != nil {
			var iu *InUseError
			if errors.As(err, &iu) || errors.Is(err, ErrNotCached) {
				continue // a task started with it, or another process removed it, meanwhile
			}
			return removed, err
		}
		removed = append(removed, c)
		if usage, err = DiskUsage(ctx, client); err != nil {
			return removed, err
		}
	}
	return removed, nil
}

var evictMu sync.Mutex

// Prune removes every image no task uses and returns them.
func Prune(ctx context.Context, client *containerd.Client) ([]Cached, error) {
	ctx = withNamespace(ctx)
	all, err := List(ctx, client)
	if err != nil {
		return nil, err
	}
	var removed []Cached
	for _, c := range all {
		if len(c.UsedBy) > 0 {
			continue
		}
		if err := Remove(ctx, client, c.Name); err != nil {
			var iu *InUseError
			if errors.As(err, &iu) || errors.Is(err, ErrNotCached) {
				continue
			}
			return removed, err
		}
		removed = append(removed, c)
	}
	return removed, nil
}

// Settings are what the server tells other processes on the host (`gantry
// image pull`) through labels on its containerd namespace.
type Settings struct {
	Budget   int64  // image cache budget in bytes; 0: none
	Registry string // HOST:PORT of the server's own registry
}

// Publish records the server's settings on its containerd namespace.
func Publish(ctx context.Context, client *containerd.Client, s Settings) error {
	ctx = withNamespace(ctx)
	ns, _ := namespaces.Namespace(ctx)
	svc := client.NamespaceService()
	if err := svc.Create(ctx, ns, nil); err != nil && !errdefs.IsAlreadyExists(err) {
		return err
	}
	if err := svc.SetLabel(ctx, ns, labelBudget, strconv.FormatInt(s.Budget, 10)); err != nil {
		return err
	}
	return svc.SetLabel(ctx, ns, labelRegistry, s.Registry)
}

// Published reads what Publish wrote; a server that never ran leaves the
// defaults.
func Published(ctx context.Context, client *containerd.Client) Settings {
	ctx = withNamespace(ctx)
	ns, _ := namespaces.Namespace(ctx)
	s := Settings{Budget: DefaultBudget}
	labels, err := client.NamespaceService().Labels(ctx, ns)
	if err != nil {
		return s
	}
	if n, err := strconv.ParseInt(labels[labelBudget], 10, 64); err == nil {
		s.Budget = n
	}
	s.Registry = labels[labelRegistry]
	return s
}

// ParseSize reads a size such as 20GiB, 500MB or 0.
func ParseSize(s string) (int64, error) {
	n, err := humanize.ParseBytes(s)
	if err != nil {
		return 0, fmt.Errorf("size %q: want a number of bytes such as 20GiB or 500MB", s)
	}
	return int64(n), nil
}

// Cache keeps the image cache within its budget: after every pull this
// process makes, and every interval for pulls other processes made.
type Cache struct {
	Client *containerd.Client
	Budget int64 // bytes; 0 disables eviction
	Log    func(msg string, args ...any)

	kick chan string
}

var activeCache struct {
	sync.Mutex
	c *Cache
}

// Start runs the eviction loop until ctx ends.
func (c *Cache) Start(ctx context.Context, interval time.Duration) {
	c.kick = make(chan string, 1)
	activeCache.Lock()
	activeCache.c = c
	activeCache.Unlock()
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		keep := ""
		for {
			c.evict(ctx, keep)
			select {
			case <-ctx.Done():
				activeCache.Lock()
				if activeCache.c == c {
					activeCache.c = nil
				}
				activeCache.Unlock()
				return
			case keep = <-c.kick:
			case <-t.C:
				keep = ""
			}
		}
	}()
}

func (c *Cache) evict(ctx context.Context, keep string) {
	if c.Budget <= 0 {
		return
	}
	removed, err := Evict(ctx, c.Client, c.Budget, keep)
	if c.Log == nil {
		return
	}
	for _, r := range removed {
		c.Log("image cache: evicted least recently used image", "image", r.Name, "size", humanize.IBytes(uint64(r.Size+r.Unpacked)), "budget", humanize.IBytes(uint64(c.Budget)))
	}
	if err != nil && ctx.Err() == nil {
		c.Log("image cache: eviction failed", "err", err)
	}
}

// pulled tells the running cache, if any, that name was just pulled.
func pulled(name string) {
	activeCache.Lock()
	c := activeCache.c
	activeCache.Unlock()
	if c == nil {
		return
	}
	select {
	case c.kick <- name:
	default:
	}
}
