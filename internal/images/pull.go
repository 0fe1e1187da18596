package images

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/content"
	"github.com/containerd/containerd/errdefs"
	cimages "github.com/containerd/containerd/images"
	"github.com/containerd/containerd/remotes"
	"github.com/containerd/containerd/remotes/docker"
	"github.com/containerd/containerd/remotes/docker/config"
	remoteserrors "github.com/containerd/containerd/remotes/errors"
	"github.com/containerd/platforms"
	"github.com/dustin/go-humanize"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Progress is where a pull stands, for a progress display.
type Progress struct {
	Ref    string
	Layers []LayerProgress // in the order the pull met them
	// Waiting is set while this pull waits for another one of the same
	// image (another task, or `gantry image pull`) to finish.
	Waiting bool
	Done    bool
}

// LayerProgress is one layer of a pull.
type LayerProgress struct {
	Digest string
	Size   int64  // from the manifest
	Offset int64  // bytes downloaded so far
	Status string // waiting, downloading or done
}

// Layer states.
const (
	LayerWaiting     = "waiting"
	LayerDownloading = "downloading"
	LayerDone        = "done"
)

// Bytes returns the bytes done and in total over every layer.
func (p Progress) Bytes() (done, total int64) {
	for _, l := range p.Layers {
		total += l.Size
		switch l.Status {
		case LayerDone:
			done += l.Size
		case LayerDownloading:
			done += l.Offset
		}
	}
	return done, total
}

// flights are the pulls this process is running, by manifest (or index)
// digest. Ten tasks of one image starting together make one pull; the
// other nine wait for it instead of racing it for every layer (containerd
// would serialize them per layer anyway, but each loser sleeps in a
// backoff of up to 2 s per layer before it notices the content is there).
var (
	flightsMu sync.Mutex
	flights   = map[string]*flight{}
)

type flight struct {
	done chan struct{}
	err  error

	mu   sync.Mutex
	last Progress
	subs map[int]func(Progress)
	next int
}

func (f *flight) publish(p Progress) {
	f.mu.Lock()
	f.last = p
	subs := make([]func(Progress), 0, len(f.subs))
	for _, s := range f.subs {
		subs = append(subs, s)
	}
	f.mu.Unlock()
	for _, s := range subs {
		s(p)
	}
}

func (f *flight) subscribe(fn func(Progress)) (cancel func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.subs == nil {
		f.subs = map[int]func(Progress){}
	}
	id := f.next
	f.next++
	f.subs[id] = fn
	return func() {
		f.mu.Lock()
		delete(f.subs, id)
		f.mu.Unlock()
	}
}

const pullHint = "if the image is local, load it with `gantry image load FILE`; otherwise check its name, that the registry is reachable from this host, and the registry credentials"

func pull(ctx context.Context, client *containerd.Client, name string, progress func(string), o PullOptions) (containerd.Image, error) {
	if o.ResolveTimeout == 0 {
		o.ResolveTimeout = 30 * time.Second
	}
	if o.CertsDir == "" {
		o.CertsDir = "/etc/containerd/certs.d"
	}
	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: withLocalRegistry(config.ConfigureHosts(ctx, config.HostOptions{
			HostDir:     config.HostDirFromRoot(o.CertsDir),
			Credentials: o.Credentials,
			UpdateClient: func(c *http.Client) error {
				// A registry that accepts the connection and then says
				// nothing must not hold a task in PENDING forever.
				if t, ok := c.Transport.(*http.Transport); ok {
					t.ResponseHeaderTimeout = o.ResolveTimeout
				}
				return nil
			},
		})),
	})
	rctx, cancel := context.WithTimeout(ctx, o.ResolveTimeout)
	_, desc, err := resolver.Resolve(rctx, name)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, resolveError(name, err)
	}
	for {
		flightsMu.Lock()
		f, running := flights[desc.Digest.String()]
		if !running {
			f = &flight{done: make(chan struct{})}
			flights[desc.Digest.String()] = f
		}
		flightsMu.Unlock()
		if !running {
			img, err := lead(ctx, client, name, resolver, f, progress, o)
			flightsMu.Lock()
			delete(flights, desc.Digest.String())
			flightsMu.Unlock()
			f.err = err
			close(f.done)
			return img, err
		}
		progress("waiting for another pull of " + desc.Digest.String())
		if o.OnProgress != nil {
			unsub := f.subscribe(func(p Progress) {
				p.Ref, p.Waiting = name, true
				p.Done = false
				o.OnProgress(p)
			})
			defer unsub()
		}
		select {
		case <-ctx.Done():
			return nil, &PullError{Ref: name, Op: "pull image", Err: ctx.Err(), Hint: pullHint}
		case <-f.done:
		}
		if f.err != nil && errors.Is(f.err, context.Canceled) {
			// The pull we waited for was called off by its own caller (a
			// task stopped while pulling), not by us: pull ourselves.
			continue
		}
		if f.err != nil {
			return nil, retarget(f.err, name)
		}
		return follow(ctx, client, name, desc, o)
	}
}

// lead runs the pull others of the same image wait for.
func lead(ctx context.Context, client *containerd.Client, name string, resolver remotes.Resolver, f *flight, progress func(string), o PullOptions) (containerd.Image, error) {
	progress("pulling " + name)
	t := &tracker{ref: name, cs: client.ContentStore()}
	pctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t.run(pctx, func(p Progress) {
			f.publish(p)
			if o.OnProgress != nil {
				o.OnProgress(p)
			}
		}, progress)
	}()
	img, err := client.Pull(ctx, name,
		containerd.WithResolver(resolver),
		containerd.WithImageHandler(cimages.HandlerFunc(t.seen)),
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(Snapshotter),
		containerd.WithPlatformMatcher(platforms.Only(platforms.DefaultSpec())),
	)
	stop()
	<-done
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, pullError(name, "pull image", err)
	}
	// Layers that were here already never went through the handler: name
	// them all, in the manifest's order, for the last report.
	if m, err := cimages.Manifest(ctx, client.ContentStore(), img.Target(), platforms.Only(platforms.DefaultSpec())); err == nil {
		t.mu.Lock()
		t.layers = append([]ocispec.Descriptor(nil), m.Layers...)
		t.mu.Unlock()
	}
	final := t.snapshot(ctx)
	final.Done = true
	f.publish(final)
	if o.OnProgress != nil {
		o.OnProgress(final)
	}
	progress(fmt.Sprintf("pulled %s (%s, %s/%s)", name, Digest(img), runtime.GOOS, runtime.GOARCH))
	pulled(name)
	return img, nil
}

// follow names the image another pull just fetched: the content and the
// snapshots are there, only this name's record may be missing.
func follow(ctx context.Context, client *containerd.Client, name string, desc ocispec.Descriptor, o PullOptions) (containerd.Image, error) {
	is := client.ImageService()
	rec, err := is.Get(ctx, name)
	switch {
	case errdefs.IsNotFound(err):
		rec, err = is.Create(ctx, cimages.Image{Name: name, Target: desc})
		if errdefs.IsAlreadyExists(err) {
			rec, err = is.Get(ctx, name)
		}
	case err == nil && rec.Target.Digest != desc.Digest:
		rec.Target = desc
		rec, err = is.Update(ctx, rec, "target")
	}
	if err != nil {
		return nil, &PullError{Ref: name, Op: "record pulled image", Err: err}
	}
	img := containerd.NewImageWithPlatform(client, rec, platforms.Only(platforms.DefaultSpec()))
	if err := unpack(ctx, img); err != nil {
		return nil, &PullError{Ref: name, Op: "unpack image", Err: err}
	}
	if o.OnProgress != nil {
		t := &tracker{ref: name, cs: client.ContentStore()}
		if m, err := cimages.Manifest(ctx, client.ContentStore(), desc, platforms.Only(platforms.DefaultSpec())); err == nil {
			t.layers = append(t.layers, m.Layers...)
		}
		p := t.snapshot(ctx)
		p.Done = true
		o.OnProgress(p)
	}
	return img, nil
}

// tracker follows a pull's layers as ctr does: containerd's image handler
// tells which layers the image has, the content store's active ingests how
// far each download is, and the store itself which are complete.
type tracker struct {
	ref string
	cs  content.Store

	mu     sync.Mutex
	layers []ocispec.Descriptor
}

func (t *tracker) seen(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	if cimages.IsLayerType(desc.MediaType) {
		t.mu.Lock()
		dup := false
		for _, l := range t.layers {
			dup = dup || l.Digest == desc.Digest
		}
		if !dup {
			t.layers = append(t.layers, desc)
		}
		t.mu.Unlock()
	}
	return nil, nil
}

func (t *tracker) snapshot(ctx context.Context) Progress {
	t.mu.Lock()
	layers := append([]ocispec.Descriptor(nil), t.layers...)
	t.mu.Unlock()
	active := map[string]content.Status{}
	if sts, err := t.cs.ListStatuses(ctx); err == nil {
		for _, s := range sts {
			if i := strings.Index(s.Ref, "sha256:"); i >= 0 {
				active[s.Ref[i:]] = s
			}
		}
	}
	p := Progress{Ref: t.ref}
	for _, l := range layers {
		lp := LayerProgress{Digest: l.Digest.String(), Size: l.Size, Status: LayerWaiting}
		if s, ok := active[l.Digest.String()]; ok {
			lp.Status, lp.Offset = LayerDownloading, s.Offset
		} else if _, err := t.cs.Info(ctx, l.Digest); err == nil {
			lp.Status, lp.Offset = LayerDone, l.Size
		}
		p.Layers = append(p.Layers, lp)
	}
	return p
}

// run reports progress every 200 ms to each, and a log line about every
// second while bytes move, until ctx ends.
func (t *tracker) run(ctx context.Context, each func(Progress), line func(string)) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var lastLine time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		p := t.snapshot(ctx)
		if ctx.Err() != nil {
			return
		}
		each(p)
		if time.Since(lastLine) >= time.Second {
			if s := p.line(); s != "" {
				line(s)
				lastLine = time.Now()
			}
		}
	}
}

// line is a one-line summary of the layers still downloading, for logs.
func (p Progress) line() string {
	var parts []string
	for _, l := range p.Layers {
		if l.Status != LayerDownloading {
			continue
		}
		parts = append(parts, fmt.Sprintf("layer %s %s/%s", ShortDigest(l.Digest), humanize.IBytes(uint64(l.Offset)), humanize.IBytes(uint64(l.Size))))
	}
	if len(parts) == 0 {
		return ""
	}
	done, total := p.Bytes()
	return fmt.Sprintf("downloading %s/%s: %s", humanize.IBytes(uint64(done)), humanize.IBytes(uint64(total)), strings.Join(parts, ", "))
}

// ShortDigest is the first 12 hex digits of a digest, as docker shows them.
func ShortDigest(d string) string {
	_, hex, ok := strings.Cut(d, ":")
	if !ok {
		hex = d
	}
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return hex
}

// resolveError says why the manifest could not be found, and what to do.
func resolveError(name string, err error) *PullError {
	return pullError(name, "failed to resolve ref", err)
}

func pullError(name, op string, err error) *PullError {
	pe := &PullError{Ref: name, Op: op, Err: err, Hint: pullHint}
	host := registryHost(name)
	var status remoteserrors.ErrUnexpectedStatus
	var netErr net.Error
	var opErr *net.OpError
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, context.Canceled):
		pe.Hint = ""
	case errors.Is(err, docker.ErrInvalidAuthorization),
		errors.As(err, &status) && (status.StatusCode == http.StatusUnauthorized || status.StatusCode == http.StatusForbidden):
		pe.Hint = "the registry " + host + " refused the credentials (or needs some): give the task definition repositoryCredentials, or for `gantry image pull` --creds USER:PASSWORD; for an ECR registry the password is `aws ecr get-login-password`"
	case strings.Contains(err.Error(), "unexpected commit digest"), strings.Contains(err.Error(), "unexpected EOF"):
		pe.Hint = "a download from " + host + " was corrupt or cut short (its digest does not match the manifest's); nothing of it was kept: try again, and if it fails the same way push the image to the registry again"
	case strings.Contains(err.Error(), "no match for platform"):
		pe.Hint = "the image has no variant for this host's platform (" + platforms.Format(platforms.DefaultSpec()) + "): push one built for it, or a multi-platform index that includes it"
	case errdefs.IsNotFound(err):
		pe.Hint = "the registry " + host + " has no such image: check the repository name and the tag or digest (`aws ecr list-images` for Gantry's registry)"
	case errors.As(err, &dnsErr), errors.As(err, &opErr), errors.As(err, &netErr) && netErr.Timeout(), errors.Is(err, context.DeadlineExceeded):
		pe.Hint = "the registry " + host + " is unreachable from this host: check the address and that it is running; a plain-HTTP registry needs a hosts.toml in /etc/containerd/certs.d/" + host + "/; if the image is local, load it with `gantry image load FILE`"
	case errors.As(err, &status) && status.StatusCode >= 500:
		pe.Hint = "the registry " + host + " failed (" + status.Status + "): try again later"
	}
	return pe
}

// retarget reports another pull's failure under this caller's name.
func retarget(err error, name string) error {
	var pe *PullError
	if errors.As(err, &pe) {
		c := *pe
		c.Ref = name
		return &c
	}
	return &PullError{Ref: name, Op: "pull image", Err: err, Hint: pullHint}
}

func registryHost(name string) string {
	host, _, _ := strings.Cut(name, "/")
	return host
}
