package efsnfs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkSmallFileClose is the close pattern that pays one COMMIT per
// file: write 4 KiB to a new file and close it, through the NFS mount,
// next to the same on the host directory with an fsync before each close
// (the durability the COMMIT gives) and without (what the mount gave
// before closes committed), in the same run.
//
//	go test -run '^$' -bench SmallFileClose -benchtime 500x ./internal/efsnfs
func BenchmarkSmallFileClose(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: FUSE mounts")
	}
	dir := b.TempDir()
	s, err := Listen("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	root, err := os.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	s.Add("/fs", Export{Root: root})
	s.Serve()
	mp := mountB(b, s.Addr().String(), "/fs")
	host := b.TempDir()
	data := make([]byte, 4096)
	run := func(d string, sync bool) time.Duration {
		t0 := time.Now()
		for i := range b.N {
			f, err := os.Create(filepath.Join(d, fmt.Sprint(i)))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := f.Write(data); err != nil {
				b.Fatal(err)
			}
			if sync {
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
			}
			if err := f.Close(); err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(t0)
	}
	b.ResetTimer()
	syncs := s.syncs.Load()
	nfs := run(mp, false)
	commits := s.syncs.Load() - syncs
	floor := run(host, true)
	plain := run(b.TempDir(), false)
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) }
	b.ReportMetric(per(nfs), "nfs-us/file")
	b.ReportMetric(per(floor), "host-fsync-us/file")
	b.ReportMetric(per(plain), "host-nosync-us/file")
	b.ReportMetric(float64(nfs)/float64(floor), "x-host-fsync")
	b.ReportMetric(float64(commits)/float64(b.N), "commits/file")
}

func mountB(b *testing.B, addr, name string) string {
	mp := b.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Mount(ctx, MountSpec{Mountpoint: mp, Addr: addr, Export: name, Source: "bench"}, func() { close(ready) })
	}()
	select {
	case <-ready:
	case err := <-done:
		b.Fatal(err)
	}
	b.Cleanup(func() {
		unix.Unmount(mp, unix.MNT_DETACH)
		cancel()
		<-done
	})
	return mp
}
