// Package containerdtest gives a test its own real containerd, started the
// way the server starts it, and stops it when the test ends.
package containerdtest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"

	gcontainerd "github.com/gantry-dev/gantry/internal/containerd"
)

// Start runs containerd with a fresh data directory and returns a client
// and that directory. The host's containerd is never used, so tests do not
// see or leave images there.
func Start(t testing.TB) (*containerd.Client, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("containerd needs root")
	}
	dataDir, err := os.MkdirTemp("", "gantry-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last-registered first: the daemon stops before its
	// directory goes.
	t.Cleanup(func() { os.RemoveAll(dataDir) })
	t.Cleanup(func() { gcontainerd.Stop(dataDir) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, err := gcontainerd.Ensure(ctx, gcontainerd.Options{DataDir: dataDir, Socket: "/nonexistent/containerd.sock"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	c, err := containerd.New(d.Address, containerd.WithDefaultNamespace(gcontainerd.Namespace))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, dataDir
}

// Context is a context in Gantry's containerd namespace.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return namespaces.WithNamespace(ctx, gcontainerd.Namespace)
}
