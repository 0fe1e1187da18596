package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/gantry-dev/gantry/internal/state"
)

// DefaultGCGrace is how long a blob link nothing references is kept after
// it was last written or checked (HEAD): a push uploads or checks its blobs
// first and names them in its manifest last, and this is the time it has
// between the two.
const DefaultGCGrace = 10 * time.Minute

// GCResult is what one collection removed.
type GCResult struct {
	Links    int   // repository blob links dropped
	Blobs    int   // files removed
	Bytes    int64 // their size
	Deferred int   // unreferenced links still in their grace period
}

// gc is the collector's state. Writers that create blob links (upload
// commits, mounts, manifest puts) hold mu for reading from the moment the
// file is in place until the link is committed; a collection holds it for
// writing, so it never removes a file a link is about to name.
type gc struct {
	mu      sync.RWMutex
	once    sync.Once
	kick    chan struct{}
	refsMu  sync.Mutex
	refs    map[string][]string // manifest digest -> the digests it names; manifests never change
	running sync.Mutex
}

// CollectGarbage removes blobs no image references any more: links of
// deleted images' blobs (once their grace period is over), then every
// file no link or image names. It is safe while pushes and pulls run.
func (r *Registry) CollectGarbage(ctx context.Context) (GCResult, error) {
	r.gc.running.Lock()
	defer r.gc.running.Unlock()
	r.gc.mu.Lock()
	defer r.gc.mu.Unlock()
	var res GCResult
	live := map[string]bool{}
	cutoff := r.Now().Add(-r.grace())
	err := r.Store.Update(ctx, func(tx state.Tx) error {
		res, live = GCResult{}, map[string]bool{}
		referenced := map[string]map[string]bool{} // repository key -> digests its images name
		if err := tx.Scan(KindImage, "", "", 0, func(k string, _ []byte) error {
			i := strings.LastIndexByte(k, '@')
			if i < 0 {
				return nil
			}
			repo, digest := k[:i], k[i+1:]
			if referenced[repo] == nil {
				referenced[repo] = map[string]bool{}
			}
			referenced[repo][digest], live[digest] = true, true
			for _, d := range r.manifestRefs(digest) {
				referenced[repo][d], live[d] = true, true
			}
			return nil
		}); err != nil {
			return err
		}
		var stale []string
		if err := tx.Scan(KindBlob, "", "", 0, func(k string, data []byte) error {
			i := strings.LastIndexByte(k, '#')
			if i < 0 {
				return nil
			}
			repo, digest := k[:i], k[i+1:]
			if referenced[repo][digest] {
				return nil
			}
			var l blobLink
			json.Unmarshal(data, &l)
			if l.Touched.After(cutoff) {
				res.Deferred++
				live[digest] = true
				return nil
			}
			stale = append(stale, k)
			return nil
		}); err != nil {
			return err
		}
		for _, k := range stale {
			if _, err := tx.Delete(KindBlob, k); err != nil {
				return err
			}
		}
		res.Links = len(stale)
		return nil
	})
	if err != nil {
		return res, err
	}
	files, err := os.ReadDir(filepath.Join(r.blobs.dir, "blobs", "sha256"))
	if err != nil {
		return res, err
	}
	for _, f := range files {
		if live["sha256:"+f.Name()] {
			continue
		}
		p := filepath.Join(r.blobs.dir, "blobs", "sha256", f.Name())
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		if err := os.Remove(p); err == nil {
			res.Blobs++
			res.Bytes += fi.Size()
			r.forget("sha256:" + f.Name())
		}
	}
	r.sweepUploads()
	return res, nil
}

// manifestRefs returns the blobs and child manifests a stored manifest
// names, read from disk once per digest.
func (r *Registry) manifestRefs(digest string) []string {
	r.gc.refsMu.Lock()
	refs, ok := r.gc.refs[digest]
	r.gc.refsMu.Unlock()
	if ok {
		return refs
	}
	h, err := v1.NewHash(digest)
	if err != nil {
		return nil
	}
	body, err := os.ReadFile(r.blobs.path(h))
	if err != nil {
		return nil
	}
	_, mr, err := parseManifest("", body)
	if err != nil {
		// A manifest stored under an older parser: keep what it plainly
		// names rather than lose blobs.
		return digestsIn(body)
	}
	for _, d := range mr.blobs {
		refs = append(refs, d.Digest.String())
	}
	for _, d := range mr.manifests {
		refs = append(refs, d.Digest.String())
	}
	r.gc.refsMu.Lock()
	if r.gc.refs == nil {
		r.gc.refs = map[string][]string{}
	}
	r.gc.refs[digest] = refs
	r.gc.refsMu.Unlock()
	return refs
}

func (r *Registry) forget(digest string) {
	r.gc.refsMu.Lock()
	delete(r.gc.refs, digest)
	r.gc.refsMu.Unlock()
}

// digestsIn finds every sha256 digest written in a document.
func digestsIn(body []byte) []string {
	var out []string
	for {
		i := bytes.Index(body, []byte("sha256:"))
		if i < 0 || len(body) < i+71 {
			return out
		}
		out = append(out, string(body[i:i+71]))
		body = body[i+71:]
	}
}

// sweepUploads removes pushes abandoned for an hour (or the grace period,
// if longer): clients resume an upload within seconds or start again.
func (r *Registry) sweepUploads() {
	age := max(r.grace(), time.Hour)
	ents, _ := os.ReadDir(filepath.Join(r.blobs.dir, "uploads"))
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && r.Now().Sub(fi.ModTime()) > age {
			os.Remove(filepath.Join(r.blobs.dir, "uploads", e.Name()))
		}
	}
}

func (r *Registry) grace() time.Duration {
	if r.GCGrace > 0 {
		return r.GCGrace
	}
	return DefaultGCGrace
}

// CollectSoon runs a collection in the background (several requests in a
// row make one or two), and again once the grace period of what it had to
// keep is over.
func (r *Registry) CollectSoon() {
	r.gc.once.Do(func() {
		r.gc.kick = make(chan struct{}, 1)
		go r.collector()
	})
	select {
	case r.gc.kick <- struct{}{}:
	default:
	}
}

func (r *Registry) collector() {
	var again <-chan time.Time
	for {
		select {
		case <-r.gc.kick:
		case <-again:
		}
		again = nil
		res, err := r.CollectGarbage(context.Background())
		switch {
		case err != nil:
			r.Log.Warn("registry garbage collection failed; it runs again on the next delete or within the hour", "err", err)
		case res.Blobs > 0 || res.Links > 0:
			r.Log.Info("registry garbage collection", "blobsRemoved", res.Blobs, "bytesFreed", res.Bytes, "linksDropped", res.Links, "deferred", res.Deferred)
		}
		if err == nil && res.Deferred > 0 {
			again = time.After(r.grace() + time.Second)
		}
	}
}
