package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
	"github.com/gantry-dev/gantry/internal/testnet"
)

// isolationModes are the cluster isolation settings every escape and
// interference test runs under.
var isolationModes = []string{"container", "sandbox"}

// TestIsolationInterference: a task that attacks its host and neighbours
// with a fork bomb, a memory hog or a CPU hog is held to its own limits
// while a neighbour task on the same host keeps answering and keeps its CPU
// share; and a task sees neither the host's processes nor another task's.
// Each runs in both isolation modes, through the aws CLI.
func TestIsolationInterference(t *testing.T) {
	s := testenv.Start(t)
	loadImage(t, s, testimage.Busybox(t))
	loadImage(t, s, testimage.Web(t))
	def := func(family, cpu, memory, command string, extra string) {
		registerJSON(t, s, fmt.Sprintf(`{"family":%q,"networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":%q,"memory":%q,
			"containerDefinitions":[{"name":"main","image":"gantry-test/busybox:latest","essential":true,"stopTimeout":2,
			"command":["sh","-c",%q]%s}]}`, family, cpu, memory, command, extra))
	}
	registerJSON(t, s, `{"family":"neighbour","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
		"containerDefinitions":[{"name":"web","image":"nginx:latest","essential":true}]}`)
	// The classic bomb: every call forks two more, forever, until fork fails.
	def("bomb", "1024", "2048", "f() { f | f & }; f; sleep 3600", "")
	def("memhog", "256", "512", "sleep 1; tail /dev/zero", "")
	// A busy loop is all the neighbour does: its CPU time per second of
	// wall time is its work rate. 0.25 vCPU caps it at a quarter core.
	def("spinner", "256", "512", "while :; do :; done", "")
	// Sixteen busy loops want eight times the machine; its 1 vCPU quota
	// and the neighbour's cgroup must keep it from the neighbour's share.
	def("cpuhog", "1024", "2048", "for i in $(seq 16); do (while :; do :; done) & done; wait", "")
	// The probe exits with the number of the first check that failed.
	def("probe", "256", "512", probeScript, "")
	def("marked", "256", "512", "exec sleep 8731", "")
	net := awsvpc(defaultSubnet(t, s))
	hostKernel, err := exec.Command("uname", "-r").Output()
	if err != nil {
		t.Fatal(err)
	}

	for _, mode := range isolationModes {
		t.Run(mode, func(t *testing.T) {
			cluster := "iso-" + mode
			s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", cluster, "--settings", "name=isolation,value="+mode)
			run := func(family string, args ...string) cliTask {
				t.Helper()
				task := runTask(t, s, append([]string{"--cluster", cluster, "--task-definition", family, "--network-configuration", net}, args...)...)
				if got := taskIsolation(t, s, cluster, task.TaskArn); got != mode {
					t.Fatalf("%s task runs with isolation %q, want %q", family, got, mode)
				}
				return task
			}
			stop := func(task cliTask) cliTask {
				t.Helper()
				s.MustAWS(nil, "ecs", "stop-task", "--cluster", cluster, "--task", task.TaskArn)
				return waitStatus(t, s, cluster, task.TaskArn, "STOPPED", 2*time.Minute)
			}
			neighbour := waitStatus(t, s, cluster, run("neighbour").TaskArn, "RUNNING", time.Minute)
			nip := neighbour.eniDetail("privateIPv4Address")
			httpGet(t, nip) // up before the attacks

			t.Run("fork bomb", func(t *testing.T) {
				bomb := waitStatus(t, s, cluster, run("bomb").TaskArn, "RUNNING", time.Minute)
				// A task of one container is its own sandbox, in its cgroup;
				// one that took a pooled sandbox has it in the root's.
				pids := filepath.Join("/sys/fs/cgroup/pids/gantry", taskID(bomb.TaskArn), bomb.Containers[0].RuntimeID)
				if cg := taskCgroup(t, s, taskID(bomb.TaskArn)); cg != taskID(bomb.TaskArn) {
					pids = filepath.Join("/sys/fs/cgroup/pids/gantry", cg, cg+"-sandbox")
				}
				if got := cgroupValue(t, pids, "pids.max"); got != "4096" {
					t.Errorf("the bomb's pids.max is %s, want 4096", got)
				}
				watch := watchNeighbour(t, nip)
				// The bomb is contained when fork starts failing at the
				// limit inside its own cgroup: pids.events counts those. A
				// gVisor sandbox may give up there instead (its kernel cannot
				// get the host threads it wants) and end the task, cgroup
				// and all; so the cgroup is read often, and its going away
				// is the end of the bomb.
				var peak int
				var limitHit, gone bool
				deadline := time.Now().Add(90 * time.Second)
				for !limitHit && !gone && time.Now().Before(deadline) {
					cur, err := os.ReadFile(filepath.Join(pids, "pids.current"))
					events, err2 := os.ReadFile(filepath.Join(pids, "pids.events"))
					if err != nil || err2 != nil {
						gone = true
						break
					}
					n, _ := strconv.Atoi(strings.TrimSpace(string(cur)))
					peak = max(peak, n)
					limitHit = eventsAtMax(string(events))
					time.Sleep(50 * time.Millisecond)
				}
				// The host can still start processes while the bomb is at
				// its limit.
				if out, err := exec.Command("true").CombinedOutput(); err != nil {
					t.Errorf("the host cannot fork while the bomb runs: %v %s", err, out)
				}
				time.Sleep(3 * time.Second) // the neighbour answers with the bomb at its limit
				fails, gets := watch()
				t.Logf("bomb: peak %d processes, limit hit %v, cgroup gone %v; neighbour answered %d/%d requests", peak, limitHit, gone, gets-fails, gets)
				switch {
				case gone && !limitHit && peak < 4096*9/10:
					t.Errorf("the bomb's task ended at %d processes, short of its pids limit", peak)
				case !gone && !limitHit:
					t.Errorf("the fork bomb never reached its pids limit (peak %d) within 90 s", peak)
				}
				if peak > 4096 {
					t.Errorf("the bomb had %d processes, over its limit of 4096", peak)
				}
				if fails > 0 || gets < 3 {
					t.Errorf("the neighbour failed %d of %d requests during the fork bomb", fails, gets)
				}
				// Whatever the bomb did to itself, it stops and leaves nothing
				// (assertNothingLeft at the end).
				got := stop(bomb)
				t.Logf("bomb stopped: %s %s, exit %v", got.StopCode, got.StoppedReason, deref(got.Containers[0].ExitCode))
			})

			t.Run("memory hog", func(t *testing.T) {
				watch := watchNeighbour(t, nip)
				// Filling 512 MiB at the task's 0.25 vCPU took nearly
				// two and a half minutes in a sandbox on a slow host.
				hog := waitStatus(t, s, cluster, run("memhog").TaskArn, "STOPPED", 7*time.Minute)
				fails, gets := watch()
				c := hog.Containers[0]
				if c.ExitCode == nil || *c.ExitCode != 137 || !strings.HasPrefix(c.Reason, "OutOfMemoryError") {
					t.Errorf("memory hog: exit %v reason %q, want 137 and OutOfMemoryError", deref(c.ExitCode), c.Reason)
				}
				if fails > 0 || gets < 2 {
					t.Errorf("the neighbour failed %d of %d requests during the memory hog", fails, gets)
				}
				httpGet(t, nip)
			})

			t.Run("cpu hog", func(t *testing.T) {
				spinner := waitStatus(t, s, cluster, run("spinner").TaskArn, "RUNNING", time.Minute)
				acct := filepath.Join("/sys/fs/cgroup/cpuacct/gantry", taskCgroup(t, s, taskID(spinner.TaskArn)))
				alone := cpuRate(t, acct, 3*time.Second)
				hog := waitStatus(t, s, cluster, run("cpuhog").TaskArn, "RUNNING", time.Minute)
				hogAcct := filepath.Join("/sys/fs/cgroup/cpuacct/gantry", taskCgroup(t, s, taskID(hog.TaskArn)))
				time.Sleep(time.Second) // the hog's loops are all spinning
				var shared, hogRate float64
				var wg sync.WaitGroup
				wg.Add(1)
				go func() { defer wg.Done(); hogRate = cpuRate(t, hogAcct, 3*time.Second) }()
				shared = cpuRate(t, acct, 3*time.Second)
				wg.Wait()
				t.Logf("neighbour's CPU: %.3f cores alone, %.3f next to the hog (ratio %.2f); the hog used %.3f cores", alone, shared, shared/alone, hogRate)
				// Upper bounds: the quotas hold. The hog must have been busy
				// for the comparison to mean anything.
				if alone > 0.3 {
					t.Errorf("a 0.25 vCPU busy loop used %.3f cores, over its quota", alone)
				}
				if hogRate > 1.1 {
					t.Errorf("the 1 vCPU hog used %.3f cores, over its quota", hogRate)
				}
				// The neighbour's share: what it used alone, unless the host
				// (shared with whatever else runs here) had only less to
				// split between the two, in which case its cgroup must get
				// it about as much as the hog's, whose sixteen threads would
				// otherwise take sixteen times the neighbour's one. Half of
				// that leaves room for noise and still fails without task
				// cgroups (1/16).
				if fair := min(alone, hogRate); shared < 0.5*fair {
					t.Errorf("next to the hog the neighbour got %.3f cores, under half its share (%.3f: alone %.3f, the hog %.3f)", shared, fair, alone, hogRate)
				}
				stop(hog)
				stop(spinner)
			})

			t.Run("processes", func(t *testing.T) {
				marked := waitStatus(t, s, cluster, run("marked").TaskArn, "RUNNING", time.Minute)
				env := fmt.Sprintf(`{"containerOverrides":[{"name":"main","environment":[{"name":"ISOLATION","value":%q},{"name":"HOST_KERNEL","value":%q}]}]}`,
					mode, strings.TrimSpace(string(hostKernel)))
				probe := waitStatus(t, s, cluster, run("probe", "--overrides", env).TaskArn, "STOPPED", 2*time.Minute)
				if code := probe.Containers[0].ExitCode; code == nil || *code != 0 {
					t.Errorf("probe: check %v failed (%s)", deref(code), probeChecks[intOr(code, 0)])
				}
				stop(marked)
			})

			if got := stop(neighbour); got.Containers[0].ExitCode == nil || *got.Containers[0].ExitCode != 0 {
				t.Errorf("the neighbour exited %v, want 0 (it handles SIGTERM)", deref(got.Containers[0].ExitCode))
			}
		})
	}
	assertNothingLeft(t, s)
}

// probeScript looks around from inside a task; it exits with the number
// of the first check that fails (see probeChecks).
const probeScript = `
set -- /proc/[0-9]*
[ $# -lt 10 ] || exit 1
me=$(tr '\0' ' ' < /proc/1/cmdline)
[ -n "$me" ] || exit 11
for p in /proc/[0-9]*; do
	cmd=$(tr '\0' ' ' < $p/cmdline 2>/dev/null)
	[ "$cmd" = "$me" ] && continue # this script, and its subshells
	case $cmd in
	*8731*) exit 2 ;;
	*containerd*|*gantry*|*runsc*|*sshd*|*systemd*|*"go test"*) exit 3 ;;
	esac
done
head -c 64 /dev/urandom > /tmp/m.ko
out=$(insmod /tmp/m.ko 2>&1) && exit 4
case $out in *"not permitted"*|*"not implemented"*|*"Function not"*|*"Operation not"*) ;; *) echo "insmod: $out"; exit 5 ;; esac
mkdir -p /tmp/m && mount -t proc proc /tmp/m 2>/dev/null && exit 6
echo 1 > /proc/sys/kernel/sysrq 2>/dev/null && exit 7
h=$(ulimit -H -n); ulimit -H -n $((h + 1)) 2>/dev/null && exit 8
if [ "$ISOLATION" = sandbox ]; then
	[ "$(uname -r)" != "$HOST_KERNEL" ] || exit 9
	dmesg | grep -q gVisor || exit 10
fi
exit 0`

var probeChecks = map[int]string{
	1:  "a task sees more than a handful of processes",
	2:  "a task sees another task's process",
	3:  "a task sees the host's processes",
	4:  "a task loaded a kernel module",
	5:  "insmod failed for another reason than being refused",
	6:  "a task mounted a file system",
	7:  "a task wrote to /proc/sys",
	8:  "a task raised its hard limit",
	9:  "a sandboxed task sees the host's kernel release",
	10: "a sandboxed task's dmesg is not gVisor's",
	11: "a task cannot see its own init",
}

func intOr(p *int, d int) int {
	if p == nil {
		return d
	}
	return *p
}

func deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}

func cgroupValue(t *testing.T, dir, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		t.Fatalf("cgroup: %v", err)
	}
	return strings.TrimSpace(string(b))
}

// eventsAtMax says whether a cgroup's pids.events counts forks refused at
// its pids.max.
func eventsAtMax(events string) bool {
	for _, line := range strings.Split(events, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), " "); ok && k == "max" && v != "0" {
			return true
		}
	}
	return false
}

// cpuRate is the cgroup's CPU time per second of wall time over d, in cores.
func cpuRate(t *testing.T, dir string, d time.Duration) float64 {
	t.Helper()
	read := func() float64 {
		n, err := strconv.ParseFloat(cgroupValue(t, dir, "cpuacct.usage"), 64)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	u0, t0 := read(), time.Now()
	time.Sleep(d)
	return (read() - u0) / float64(time.Since(t0).Nanoseconds())
}

// watchNeighbour asks the neighbour's web server for its page twice a
// second until the returned function is called, which returns how many
// requests failed and how many were made.
func watchNeighbour(t *testing.T, ip string) func() (fails, gets int) {
	done := make(chan struct{})
	var fails, gets int
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case <-time.After(500 * time.Millisecond):
			}
			gets++
			if page, err := testnet.HTTPGet(t, ip, 80, "/"); err != nil || page != testimage.WebIndex {
				fails++
				t.Logf("neighbour: %v", err)
			}
		}
	}()
	return func() (int, int) {
		close(done)
		wg.Wait()
		return fails, gets
	}
}
