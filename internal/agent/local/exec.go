package local

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/execstream"
)

// ExecTokenTTL is how long an ECS Exec session waits for its client.
const ExecTokenTTL = 60 * time.Second

// execSessions are sessions OpenExec prepared and no client has attached
// to yet. They live in memory only: a restarted agent forgets them, and the
// client asks ExecuteCommand again.
type execSessions struct {
	mu sync.Mutex
	m  map[string]*execSession
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

	// The client closing its stdin becomes CloseIO, which lets the
	// command read EOF (the shim holds the FIFO open until then).
	stdinEOF := make(chan struct{})
	stdin := &eofNotifier{r: sc.Stdin(), eof: stdinEOF}
	opts := []cio.Opt{cio.WithStreams(stdin, sc.Stdout(), sc.Stderr())}
	if sc.TTY {
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
	if sc.TTY && proc.ConsoleSize != nil {
		p.Resize(ctx, uint32(sc.Size.Cols), uint32(sc.Size.Rows))
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
			return int(code), ""
		case <-stdinEOF:
			stdinEOF = nil
			p.CloseIO(ctx, containerd.WithStdinCloser)
		case sz := <-sc.Resizes():
			p.Resize(ctx, uint32(sz.Cols), uint32(sz.Rows))
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
