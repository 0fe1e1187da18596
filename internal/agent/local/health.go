package local

import (
	"context"
	"fmt"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

var execSeq atomic.Uint64

// startHealth runs c's health check until c stops, as Docker does for ECS:
// the first probe one interval after the start, failures inside the start
// period not counted, UNHEALTHY after retries failures in a row.
func (r *runner) startHealth(c *ctr) {
	hc := c.spec.HealthCheck
	if hc == nil || len(hc.Command) == 0 || hc.Command[0] == "NONE" {
		return
	}
	var args []string
	switch hc.Command[0] {
	case "CMD-SHELL":
		if len(hc.Command) < 2 {
			return
		}
		args = []string{"/bin/sh", "-c", hc.Command[1]}
	case "CMD":
		args = hc.Command[1:]
	default:
		args = hc.Command // ECS takes a bare command as CMD
	}
	if len(args) == 0 {
		return
	}
	interval, timeout, retries := hc.Interval, hc.Timeout, hc.Retries
	if interval <= 0 {
		interval = 30 * time.Second
	}
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	if retries <= 0 {
		retries = 3
	}
	ctx, cancel := context.WithCancel(r.ctx)
	c.stopHealth = cancel
	tk, container, idx := c.t, c.c, c.idx
	go func() {
		defer cancel()
		spec, err := container.Spec(ctx)
		if err != nil {
			return
		}
		proc := *spec.Process
		proc.Args, proc.Terminal = args, false
		started := time.Now()
		fails, last := 0, ""
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
			err := probe(ctx, tk, &proc, timeout)
			if ctx.Err() != nil {
				return
			}
			status := ""
			switch {
			case err == nil:
				fails, status = 0, "HEALTHY"
			case time.Since(started) < hc.StartPeriod:
			default:
				if fails++; fails >= retries {
					status = "UNHEALTHY"
				}
			}
			if status == "" || status == last {
				continue
			}
			last = status
			select {
			case r.t.events <- event{idx: idx, health: status}:
			case <-ctx.Done():
				return
			}
		}
	}()
}

// probe runs one check inside the container; nil means it exited 0 within
// timeout.
func probe(ctx context.Context, tk containerd.Task, proc *specs.Process, timeout time.Duration) error {
	id := fmt.Sprintf("health-%d", execSeq.Add(1))
	p, err := tk.Exec(ctx, id, proc, cio.NullIO)
	if err != nil {
		return err
	}
	// A fresh context: the exec must be deleted even when ctx has ended.
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		p.Delete(dctx, containerd.WithProcessKill)
	}()
	exitc, err := p.Wait(ctx)
	if err != nil {
		return err
	}
	if err := p.Start(ctx); err != nil {
		return err
	}
	select {
	case st := <-exitc:
		if err := st.Error(); err != nil {
			return err
		}
		if st.ExitCode() != 0 {
			return fmt.Errorf("exit code %d", st.ExitCode())
		}
		return nil
	case <-time.After(timeout):
		if err := p.Kill(ctx, syscall.SIGKILL); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
		return fmt.Errorf("timed out after %s", timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}
