package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// blobBytes is what the registry's blob directory holds.
func blobBytes(t *testing.T, s *registryServer) int64 {
	t.Helper()
	var n int64
	files, _ := filepath.Glob(filepath.Join(s.DataDir, "registry", "blobs", "sha256", "*"))
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// waitBlobBytes waits for the collector to bring the blobs below max.
func waitBlobBytes(t *testing.T, s *registryServer, max int64, what string) int64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := blobBytes(t, s)
		if n <= max {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the registry still holds %d bytes of blobs, want at most %d", what, n, max)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (s *registryServer) mustPull(t *testing.T, ref, pw string) {
	t.Helper()
	img, err := remote.Image(s.ref(t, ref), auth(pw))
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
}

// TestRegistryGarbageCollection deletes images by BatchDeleteImage, a
// lifecycle policy and DeleteRepository --force, and watches the disk give
// the space back, while other pushes and pulls go on and keep working.
func TestRegistryGarbageCollection(t *testing.T) {
	t.Setenv("GANTRY_REGISTRY_GC_GRACE", "4s")
	s := startRegistry(t)
	pw := s.password(t)
	for _, r := range []string{"keep", "gone", "cycle", "busy"} {
		s.createRepo(t, r)
	}
	const mib = 1 << 20
	s.pushImage(t, "keep:v1", layeredImage(t, 2*mib), pw)
	s.pushImage(t, "gone:v1", layeredImage(t, 4*mib), pw)
	s.pushImage(t, "gone:v2", layeredImage(t, 4*mib), pw)
	s.pushImage(t, "cycle:v1", layeredImage(t, 4*mib), pw)
	time.Sleep(4100 * time.Millisecond) // past the grace period of these pushes
	full := blobBytes(t, s)

	// BatchDeleteImage: the 4 MiB layer only gone:v1 had goes; the busybox
	// layer every image shares stays.
	s.MustAWS(nil, "ecr", "batch-delete-image", "--repository-name", "gone", "--image-ids", "imageTag=v1")
	after := waitBlobBytes(t, s, full-4*mib, "after batch-delete-image")
	s.mustPull(t, "gone:v2", pw)
	s.mustPull(t, "keep:v1", pw)

	// A lifecycle policy keeping one image expires the older.
	s.pushImage(t, "cycle:v2", layeredImage(t, 1*mib), pw)
	time.Sleep(4100 * time.Millisecond)
	withV2 := blobBytes(t, s)
	if withV2 <= after {
		t.Fatalf("pushing cycle:v2 did not add blobs: %d -> %d", after, withV2)
	}
	s.MustAWS(nil, "ecr", "put-lifecycle-policy", "--repository-name", "cycle", "--lifecycle-policy-text",
		`{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}`)
	after = waitBlobBytes(t, s, withV2-4*mib, "after lifecycle expiry")
	s.mustPull(t, "cycle:v2", pw)

	// Concurrent pushes to another repository while whole repositories go:
	// every push must stay pullable.
	beforeGone := blobBytes(t, s)
	var wg sync.WaitGroup
	var pushed []string
	var mu sync.Mutex
	errs := make(chan error, 10)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 6; i++ {
			tag := fmt.Sprintf("busy:v%d", i)
			if err := remote.Write(s.ref(t, tag), layeredImage(t, 256<<10), auth(pw)); err != nil {
				errs <- fmt.Errorf("push %s during collection: %w", tag, err)
				return
			}
			mu.Lock()
			pushed = append(pushed, tag)
			mu.Unlock()
		}
	}()
	for i := 0; i < 3; i++ {
		repo := fmt.Sprintf("churn%d", i)
		s.createRepo(t, repo)
		s.pushImage(t, repo+":x", layeredImage(t, 512<<10), pw)
		s.MustAWS(nil, "ecr", "delete-repository", "--repository-name", repo, "--force")
	}
	s.MustAWS(nil, "ecr", "delete-repository", "--repository-name", "gone", "--force")
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, tag := range pushed {
		s.mustPull(t, tag, pw)
	}
	// gone:v2's 4 MiB layer and the churn repositories' layers go too
	// once their grace period is over; the busy pushes added about 1.5 MiB.
	waitBlobBytes(t, s, beforeGone-2*mib, "after delete-repository --force")
	s.mustPull(t, "keep:v1", pw)
	s.mustPull(t, "cycle:v2", pw)
	if b, err := os.ReadFile(s.LogPath()); err != nil || !strings.Contains(string(b), `msg="registry garbage collection"`) {
		t.Errorf("the server log does not report the collections")
	}
	s.Restart()
	s.mustPull(t, "keep:v1", s.password(t))
}
