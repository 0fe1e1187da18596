package containerd

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestOwnDaemon: Ensure starts Gantry's containerd when none answers, a
// second Ensure adopts it rather than starting another, and Stop ends it.
func TestOwnDaemon(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("containerd needs root")
	}
	dataDir := t.TempDir()
	t.Cleanup(func() { Stop(dataDir) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opts := Options{DataDir: dataDir, Socket: "/nonexistent/containerd.sock"}
	d, err := Ensure(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if !d.Owned || d.Address != OwnSocket(dataDir) {
		t.Fatalf("daemon %+v", d)
	}
	pid := readPID(t, dataDir)

	again, err := Ensure(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	again.Close()
	if readPID(t, dataDir) != pid {
		t.Fatal("a second Ensure started another containerd instead of adopting the first")
	}

	Stop(dataDir)
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("containerd %d still runs after Stop", pid)
	}
	if answers(ctx, OwnSocket(dataDir)) {
		t.Error("the socket still answers after Stop")
	}
}

func readPID(t *testing.T, dataDir string) int {
	t.Helper()
	b, err := os.ReadFile(PIDFile(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}
