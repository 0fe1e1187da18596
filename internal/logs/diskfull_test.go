package logs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gantry-dev/gantry/internal/awsapi"
)

// TestStoreDiskFull fills the file system under logs.db: writes must fail
// with DiskFullError (ServiceUnavailableException to clients) and leave the
// database whole and readable, and the same writes must succeed once space
// is freed.
func TestStoreDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=3m", "gantry-logs-test", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	// Room kept aside, given back later as a user deleting files would.
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}

	s, err := Open(filepath.Join(dir, "logs.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, sc := context.Background(), Scope{"1", "r"}
	if err := s.createGroup(ctx, sc, "g", "", "STANDARD", nil); err != nil {
		t.Fatal(err)
	}
	batch := func(n int) []Event {
		evs := make([]Event, 200)
		for i := range evs {
			evs[i] = Event{Timestamp: int64(n*200 + i), Message: fmt.Sprintf("batch %d line %d %s", n, i, strings.Repeat("x", 1000))}
		}
		return evs
	}
	stored := 0
	var full error
	for n := 0; n < 100; n++ {
		if err := s.putEvents(ctx, sc, "g", "s", true, batch(n), nil); err != nil {
			full = err
			break
		}
		stored++
	}
	var dfe *DiskFullError
	if !errors.As(full, &dfe) {
		t.Fatalf("after %d batches: %v, want a DiskFullError", stored, full)
	}
	if ae := awsapi.AsError(full); ae.Code != "ServiceUnavailableException" || ae.Status != 503 {
		t.Errorf("API error %s %d, want ServiceUnavailableException 503", ae.Code, ae.Status)
	}
	count := func() int {
		var n int
		if err := s.read.QueryRow(`SELECT count(*) FROM log_events`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	t.Logf("full after %d batches: %v", stored, full)
	// The failed batch left nothing behind: all or nothing.
	if got := count(); got != stored*200 {
		t.Fatalf("%d events stored, want %d", got, stored*200)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := s.putEvents(ctx, sc, "g", "s", true, batch(stored), nil); err != nil {
		t.Fatalf("after freeing space: %v", err)
	}
	if got := count(); got != (stored+1)*200 {
		t.Errorf("%d events stored, want %d", got, (stored+1)*200)
	}
	var ok string
	if err := s.write.QueryRow(`PRAGMA integrity_check`).Scan(&ok); err != nil || ok != "ok" {
		t.Errorf("integrity_check: %q %v", ok, err)
	}
}
