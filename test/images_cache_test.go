package test

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
)

// imageNames returns the names `gantry image ls` lists.
func imageNames(t *testing.T, s *testenv.Server) map[string]string {
	t.Helper()
	out, err := gantryImage(t, s, "ls")
	if err != nil {
		t.Fatalf("gantry image ls: %v\n%s", err, out)
	}
	names := map[string]string{}
	for _, line := range strings.Split(out, "\n")[1:] {
		if f := strings.Fields(line); len(f) > 0 && strings.Contains(f[0], "/") {
			names[f[0]] = line
		}
	}
	return names
}

// TestImageCacheBudget keeps the cache within --image-cache-budget by
// evicting the least recently used images no task uses, and checks that
// rm and prune refuse the image a running task uses.
func TestImageCacheBudget(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := ln.Addr().String()
	ln.Close()
	// Each image: the shared busybox layer (about 1 MiB packed, 2 MiB
	// unpacked) and its own 8 MiB layer, which costs 16 MiB cached (packed
	// and unpacked). Two images fit in 40 MiB, three do not.
	s := &registryServer{Server: testenv.Start(t, "--registry-listen", host, "--image-cache-budget", "40MiB"), Host: host}
	s.createRepo(t, "cache")
	pw := s.password(t)
	for _, tag := range []string{"a", "b", "c", "d"} {
		s.pushImage(t, "cache:"+tag, layeredImage(t, 8<<20), pw)
	}
	ref := func(tag string) string { return s.Host + "/cache:" + tag }

	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "cache")
	registerJSON(t, s.Server, `{"family":"cache-a","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"main","image":"`+ref("a")+`","stopTimeout":2}]}`)
	task := runTask(t, s.Server, "--cluster", "cache", "--task-definition", "cache-a", "--network-configuration", awsvpc(defaultSubnet(t, s.Server)))
	waitStatus(t, s.Server, "cache", task.TaskArn, "RUNNING", 2*time.Minute)
	taskID := task.TaskArn[strings.LastIndex(task.TaskArn, "/")+1:]

	for _, tag := range []string{"b", "c"} {
		if out, err := gantryImage(t, s.Server, "pull", ref(tag)); err != nil {
			t.Fatalf("pull %s: %v\n%s", tag, err, out)
		}
		time.Sleep(1100 * time.Millisecond) // distinct last-use times
	}
	// a (in use) + b + c is over the budget: b, the least recently used
	// image no task uses, went; c, just pulled, stays.
	names := imageNames(t, s.Server)
	if _, ok := names[ref("b")]; ok {
		t.Errorf("b was not evicted:\n%v", names)
	}
	if _, ok := names[ref("c")]; !ok {
		t.Errorf("c, just pulled, was evicted:\n%v", names)
	}
	if line := names[ref("a")]; !strings.Contains(line, taskID) {
		t.Errorf("a is used by the running task %s, ls says:\n%s", taskID, line)
	}
	out, err := gantryImage(t, s.Server, "pull", ref("d"))
	if err != nil || !strings.Contains(out, "Evicted "+ref("c")+" (least recently used") {
		t.Fatalf("pull d: %v\n%s", err, out)
	}

	out, err = gantryImage(t, s.Server, "rm", ref("a"))
	if err == nil || !strings.Contains(out, "is used by running task "+taskID) || !strings.Contains(out, "stop the task first") {
		t.Errorf("rm of an image in use: %v\n%s", err, out)
	}
	if out, err := gantryImage(t, s.Server, "rm", ref("nosuch")); err == nil || !strings.Contains(out, "no image") {
		t.Errorf("rm of a missing image: %v\n%s", err, out)
	}
	out, err = gantryImage(t, s.Server, "prune")
	if err != nil || !strings.Contains(out, "Removed "+ref("d")) || strings.Contains(out, "Removed "+ref("a")) || !strings.Contains(out, "reclaimed") {
		t.Fatalf("prune: %v\n%s", err, out)
	}
	if names := imageNames(t, s.Server); len(names) != 1 {
		t.Errorf("after prune, want only a:\n%v", names)
	}

	s.MustAWS(nil, "ecs", "stop-task", "--cluster", "cache", "--task", task.TaskArn)
	waitStatus(t, s.Server, "cache", task.TaskArn, "STOPPED", time.Minute)
	if out, err := gantryImage(t, s.Server, "rm", ref("a")); err != nil || !strings.Contains(out, "Removed "+ref("a")) {
		t.Fatalf("rm after the task stopped: %v\n%s", err, out)
	}
	out, _ = gantryImage(t, s.Server, "ls")
	if !strings.Contains(out, "0 images, 0 B on disk") {
		t.Errorf("the cache is not empty after removing every image:\n%s", out)
	}
}
