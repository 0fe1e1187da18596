package local

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"debug/elf"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/oci"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/execstream"
	"github.com/gantry-dev/gantry/internal/execstream/ttyframe"
)

// ExecTokenTTL is how long an ECS Exec session waits for its client.
const ExecTokenTTL = 60 * time.Second

// execSessions are sessions OpenExec prepared and no client has attached
// to yet. They live in memory only: a restarted agent forgets them, and the
// client asks ExecuteCommand again.
type execSessions struct {
	mu sync.Mutex
	m  map[string]*execSession

	ttyWarn sync.Once // the terminal helper's absence, logged once
}

type execSession struct {
	id        string
	token     string
	req       agent.ExecRequest
	runtimeID string
	expires   time.Time
}

func (a *Agent) OpenExec(ctx context.Context, req agent.ExecRequest) (agent.ExecSession, error) {
	if len(req.Command) == 0 {
		return agent.ExecSession{}, errors.New("empty command")
	}
	a.mu.Lock()
	t := a.tasks[req.TaskID]
	a.mu.Unlock()
	if t == nil {
		return agent.ExecSession{}, agent.ErrExecTargetNotRunning
	}
	st := t.status()
	if st.Phase != agent.PhaseRunning {
		return agent.ExecSession{}, agent.ErrExecTargetNotRunning
	}
	runtimeID := ""
	for _, c := range st.Containers {
		if c.Name == req.Container && c.Status == "RUNNING" {
			runtimeID = c.RuntimeID
		}
	}
	if runtimeID == "" {
		return agent.ExecSession{}, agent.ErrExecTargetNotRunning
	}
	s := &execSession{
		id:        "ecs-execute-command-" + randomHex(9)[:17],
		token:     randomToken(),
		req:       req,
		runtimeID: runtimeID,
		expires:   time.Now().Add(ExecTokenTTL),
	}
	a.execs.mu.Lock()
	if a.execs.m == nil {
		a.execs.m = map[string]*execSession{}
	}
	for id, o := range a.execs.m {
		if time.Now().After(o.expires) {
			delete(a.execs.m, id)
		}
	}
	a.execs.m[s.id] = s
	a.execs.mu.Unlock()
	return agent.ExecSession{
		SessionID: s.id,
		StreamURL: strings.TrimRight(a.cfg.ExecURL, "/") + "/" + s.id,
		Token:     s.token,
		ExpiresAt: s.expires,
	}, nil
}

// take hands a session to the client holding its token, once.
func (e *execSessions) take(id, token string) (*execSession, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.m[id]
	if s == nil || token == "" || subtle.ConstantTimeCompare([]byte(s.token), []byte(token)) != 1 {
		return nil, false
	}
	delete(e.m, id)
	if time.Now().After(s.expires) {
		return nil, false
	}
	return s, true
}

// ExecHandler serves the sessions' streams: GET .../<session id>, upgraded
// to a websocket (package execstream), authorized by the session's token.
func (a *Agent) ExecHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		token, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		s, ok := a.execs.take(id, token)
		if !ok {
			http.Error(w, "The exec session does not exist, has expired or was already used, or the token is not valid.", http.StatusUnauthorized)
			return
		}
		sc, err := execstream.Accept(w, r)
		if err != nil {
			a.log.Warn("exec: attach", "session", s.id, "err", err)
			return
		}
		code, msg := a.runExec(s, sc)
		a.log.Info("exec session ended", "task", s.req.TaskID, "container", s.req.Container, "session", s.id, "exitCode", code, "err", msg)
		sc.Exit(code, msg)
	})
}

// runExec runs the session's command in its container and relays it; it
// returns the exit code, or -1 and why the command could not run.
func (a *Agent) runExec(s *execSession, sc *execstream.ServerConn) (int, string) {
	ctx := a.ctx
	cont, err := a.client.LoadContainer(ctx, s.runtimeID)
	if err != nil {
		return -1, "The container is no longer running."
	}
	tk, err := cont.Task(ctx, nil)
	if err != nil {
		return -1, "The container is no longer running."
	}
	spec, err := cont.Spec(ctx)
	if err != nil {
		return -1, fmt.Sprintf("read the container's spec: %v", err)
	}
	proc := *spec.Process
	proc.Args, proc.Terminal = s.req.Command, sc.TTY
	proc.Env = append([]string(nil), proc.Env...)
	if sc.TTY {
		if !hasEnv(proc.Env, "TERM") {
			proc.Env = append(proc.Env, "TERM=xterm")
		}
		if sc.Size.Cols > 0 && sc.Size.Rows > 0 {
			proc.ConsoleSize = &specs.Box{Width: uint(sc.Size.Cols), Height: uint(sc.Size.Rows)}
		}
	}
	// In a sandbox the terminal is made inside the container by the helper
	// (see withExecTTY); the process itself gets plain pipes.
	var frames *ttyframe.Writer
	viaHelper := sc.TTY && hasExecTTY(spec)
	if viaHelper {
		proc.Terminal, proc.ConsoleSize = false, nil
		proc.Args = append([]string{execTTYPath, ExecTTYCommand, ttyframe.Version, strconv.Itoa(int(sc.Size.Rows)), strconv.Itoa(int(sc.Size.Cols))}, s.req.Command...)
	}

	// The client closing its stdin becomes CloseIO, which lets the
	// command read EOF (the shim holds the FIFO open until then).
	stdinEOF := make(chan struct{})
	var stdin io.Reader = &eofNotifier{r: sc.Stdin(), eof: stdinEOF}
	if viaHelper {
		// Input and resizes share the helper's stdin as frames.
		pr, pw := io.Pipe()
		frames = ttyframe.NewWriter(pw)
		go func(in io.Reader) {
			_, err := io.Copy(frames, in)
			pw.CloseWithError(err)
		}(stdin)
		stdin = pr
	}
	var stderr io.Writer = sc.Stderr()
	var helperErr *tailBuffer
	if viaHelper {
		// The command's output is all on the terminal; the helper's own
		// stderr only says why the command could not run, which becomes
		// the session's closing message as on the direct path.
		helperErr = &tailBuffer{max: 4096}
		stderr = helperErr
	}
	opts := []cio.Opt{cio.WithStreams(stdin, sc.Stdout(), stderr)}
	if proc.Terminal {
		opts = append(opts, cio.WithTerminal)
	}
	p, err := tk.Exec(ctx, s.id, &proc, cio.NewCreator(opts...))
	if err != nil {
		return -1, fmt.Sprintf("exec: %v", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		p.Delete(dctx, containerd.WithProcessKill)
	}()
	exitc, err := p.Wait(ctx)
	if err != nil {
		return -1, fmt.Sprintf("exec: %v", err)
	}
	if err := p.Start(ctx); err != nil {
		// As docker exec: 127 for a command that is not there, 126 for one
		// that cannot run.
		msg := err.Error()
		if strings.Contains(msg, "not found") || strings.Contains(msg, "no such file") {
			return 127, fmt.Sprintf("exec %q: executable file not found", s.req.Command[0])
		}
		return 126, fmt.Sprintf("exec %q: %v", s.req.Command[0], err)
	}
	if proc.Terminal && proc.ConsoleSize != nil {
		p.Resize(ctx, uint32(sc.Size.Cols), uint32(sc.Size.Rows))
	}
	resize := func(sz execstream.Size) {
		if frames != nil {
			frames.Resize(ttyframe.Size{Rows: uint16(sz.Rows), Cols: uint16(sz.Cols)})
			return
		}
		p.Resize(ctx, uint32(sz.Cols), uint32(sz.Rows))
	}
	gone := sc.Gone()
	for {
		select {
		case st := <-exitc:
			// Let the output still in the FIFOs reach the client; a
			// background child keeping them open does not hold the exit up.
			done := make(chan struct{})
			go func() { p.IO().Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
			}
			code, _, err := st.Result()
			if err != nil {
				return -1, err.Error()
			}
			if helperErr != nil && code != 0 {
				return int(code), helperErr.String()
			}
			return int(code), ""
		case <-stdinEOF:
			stdinEOF = nil
			p.CloseIO(ctx, containerd.WithStdinCloser)
		case sz := <-sc.Resizes():
			resize(sz)
		case <-gone:
			// The client went away: end the command, as closing a
			// terminal would.
			gone = nil
			p.Kill(ctx, syscall.SIGKILL)
		case <-a.ctx.Done():
			return -1, "the agent is shutting down"
		}
	}
}

// eofNotifier closes eof when its reader ends.
type eofNotifier struct {
	r    io.Reader
	eof  chan struct{}
	once sync.Once
}

func (e *eofNotifier) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		e.once.Do(func() { close(e.eof) })
	}
	return n, err
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}

func hasEnv(env []string, name string) bool {
	for _, e := range env {
		if strings.HasPrefix(e, name+"=") {
			return true
		}
	}
	return false
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// execTTYPath is where sandboxed containers see the gantry binary, to run
// `gantry exec-tty` (cmd/gantry/exectty.go). gVisor presents a terminal
// handed in from the host as a host file, not one of its devpts, so
// ttyname() fails on it and `tty` says "not a tty" (google/gvisor#13535);
// the helper allocates the session's terminal from the container's own
// /dev/ptmx instead, as Fargate's SSM session worker does. In /dev, a tmpfs
// in both runtimes, so the image's filesystem gets no mount point, and a
// read-only root does not matter.
const execTTYPath = "/dev/.gantry-exec-tty"

// ExecTTYCommand is the hidden gantry subcommand the helper is.
const ExecTTYCommand = "exec-tty"

// execTTYHelper is the running gantry binary when it can run in a
// container: statically linked (CGO_ENABLED=0, as install.sh and testenv
// build it), since the container has none of the host's libraries.
var execTTYHelper = sync.OnceValue(func() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	f, err := elf.Open(exe)
	if err != nil {
		return ""
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return ""
		}
	}
	return exe
})

// withExecTTY mounts the terminal helper into a sandboxed task's container.
// runc needs none: it opens an exec's terminal inside the container itself.
// Without the helper installed, sandboxed exec terminals still work, with
// gVisor's host-backed terminal, and the agent says so once.
func (a *Agent) withExecTTY(isolation string) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if isolation != agent.IsolationSandbox {
			return nil
		}
		helper := execTTYHelper()
		if helper == "" {
			a.execs.ttyWarn.Do(func() {
				a.log.Warn("exec: the gantry binary is not statically linked (build it with CGO_ENABLED=0), so it cannot run in a container; ECS Exec terminals in sandboxed tasks will not be resolvable by ttyname (`tty` says \"not a tty\")")
			})
			return nil
		}
		s.Mounts = append(s.Mounts, specs.Mount{Destination: execTTYPath, Type: "bind", Source: helper, Options: []string{"bind", "ro"}})
		return nil
	}
}

func hasExecTTY(spec *oci.Spec) bool {
	for _, m := range spec.Mounts {
		if m.Destination == execTTYPath {
			return true
		}
	}
	return false
}
