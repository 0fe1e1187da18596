// Package execstream is the wire protocol of ECS Exec sessions in Gantry:
// the stream that ExecuteCommand's session.streamUrl names. Where AWS hands
// the session to the SSM Session Manager plugin, Gantry's agent serves the
// stream itself as a websocket, and `gantry exec` (Attach) is its client.
//
// The client dials streamUrl with "Authorization: Bearer <tokenValue>" and
// the subprotocol gantry-exec.v1; the query says whether it wants a
// terminal (tty=1) and its size (cols, rows). Every websocket message is
// binary, its first byte a frame type, the rest its payload:
//
//	client → agent: 'i' stdin bytes, 'c' stdin closed, 'r' resize (cols, rows as two big-endian uint16)
//	agent → client: 'o' stdout bytes, 'e' stderr bytes, 'x' exit (int32 big-endian exit code, then an optional error message)
//
// The exit frame is the last message; the agent then closes the socket.
package execstream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/coder/websocket"
)

// Subprotocol is the websocket subprotocol both sides insist on.
const Subprotocol = "gantry-exec.v1"

// Frame types.
const (
	FrameStdin      = 'i'
	FrameStdinClose = 'c'
	FrameResize     = 'r'
	FrameStdout     = 'o'
	FrameStderr     = 'e'
	FrameExit       = 'x'
)

// Size is a terminal's size in character cells.
type Size struct{ Cols, Rows uint16 }

// ResizePayload encodes a resize frame's payload.
func ResizePayload(s Size) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint16(b, s.Cols)
	binary.BigEndian.PutUint16(b[2:], s.Rows)
	return b
}

// ParseResize decodes a resize frame's payload.
func ParseResize(p []byte) (Size, bool) {
	if len(p) != 4 {
		return Size{}, false
	}
	return Size{binary.BigEndian.Uint16(p), binary.BigEndian.Uint16(p[2:])}, true
}

// ExitPayload encodes an exit frame's payload.
func ExitPayload(code int, msg string) []byte {
	b := make([]byte, 4, 4+len(msg))
	binary.BigEndian.PutUint32(b, uint32(int32(code)))
	return append(b, msg...)
}

// Options are what the client attaches with.
type Options struct {
	TTY    bool
	Size   Size // initial terminal size, with TTY
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer // with TTY, unused: a terminal has one output
	// Resize, with TTY, delivers later terminal sizes.
	Resize <-chan Size
	// HTTPClient dials the websocket; nil: http.DefaultClient.
	HTTPClient *http.Client
}

// ExitError is a command's non-zero exit, or a session the agent ended
// with an error (Code -1 and its Message).
type ExitError struct {
	Code    int
	Message string
}

func (e *ExitError) Error() string {
	if e.Message != "" {
		return e.Message
	}
	return fmt.Sprintf("command exited with code %d", e.Code)
}

// Attach connects to a session's stream and relays it until the command
// exits: nil for exit code 0, an *ExitError otherwise.
func Attach(ctx context.Context, streamURL, token string, o Options) error {
	u, err := url.Parse(streamURL)
	if err != nil {
		return fmt.Errorf("stream URL: %w", err)
	}
	q := u.Query()
	if o.TTY {
		q.Set("tty", "1")
		if o.Size.Cols > 0 && o.Size.Rows > 0 {
			q.Set("cols", strconv.Itoa(int(o.Size.Cols)))
			q.Set("rows", strconv.Itoa(int(o.Size.Rows)))
		}
	}
	u.RawQuery = q.Encode()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{
		HTTPClient:   o.HTTPClient,
		HTTPHeader:   http.Header{"Authorization": {"Bearer " + token}},
		Subprotocols: []string{Subprotocol},
	})
	if err != nil {
		if resp != nil && resp.Body != nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			if msg := strings.TrimSpace(string(b)); msg != "" {
				return fmt.Errorf("attach to exec session: %s", msg)
			}
		}
		return fmt.Errorf("attach to exec session: %w", err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)

	var wmu sync.Mutex
	send := func(typ byte, p []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		return conn.Write(ctx, websocket.MessageBinary, append([]byte{typ}, p...))
	}
	if o.Stdin != nil {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := o.Stdin.Read(buf)
				if n > 0 {
					if send(FrameStdin, buf[:n]) != nil {
						return
					}
				}
				if err != nil {
					send(FrameStdinClose, nil)
					return
				}
			}
		}()
	} else {
		go send(FrameStdinClose, nil)
	}
	if o.TTY && o.Resize != nil {
		go func() {
			for {
				select {
				case s := <-o.Resize:
					if send(FrameResize, ResizePayload(s)) != nil {
						return
					}
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	stderr := o.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	for {
		_, msg, err := conn.Read(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("exec session ended without an exit status: %w", err)
		}
		if len(msg) == 0 {
			continue
		}
		p := msg[1:]
		switch msg[0] {
		case FrameStdout:
			if o.Stdout != nil {
				o.Stdout.Write(p)
			}
		case FrameStderr:
			stderr.Write(p)
		case FrameExit:
			if len(p) < 4 {
				return errors.New("exec session: malformed exit frame")
			}
			code := int(int32(binary.BigEndian.Uint32(p)))
			conn.Close(websocket.StatusNormalClosure, "")
			if code == 0 && len(p) == 4 {
				return nil
			}
			return &ExitError{Code: code, Message: string(p[4:])}
		}
	}
}

// SplitCommand splits ExecuteCommand's command string into arguments the
// way a POSIX shell splits words: blanks separate them, single quotes keep
// everything, double quotes keep everything but backslash escapes of " \ $
// and `, and a backslash outside quotes escapes the next character. No
// expansion happens; run `sh -c '...'` for that.
func SplitCommand(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\'':
			inWord = true
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("unterminated single quote")
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
		case c == '"':
			inWord = true
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, errors.New("unterminated double quote")
			}
		case c == '\\':
			inWord = true
			if i+1 < len(s) {
				i++
				cur.WriteByte(s[i])
			}
		default:
			inWord = true
			cur.WriteByte(c)
		}
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, nil
}

// JoinCommand quotes args into one command string that SplitCommand turns
// back into args.
func JoinCommand(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:,+@%", r))
		}) < 0 {
			q[i] = a
			continue
		}
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// ServerConn is the agent's side of a session's stream.
type ServerConn struct {
	TTY  bool
	Size Size // the initial terminal size, with TTY; zero if the client sent none

	conn   *websocket.Conn
	ctx    context.Context
	wmu    sync.Mutex
	stdinR *io.PipeReader
	stdinW *io.PipeWriter
	resize chan Size
	gone   chan struct{}
}

// Accept upgrades an attach request. The caller has checked its token.
func Accept(w http.ResponseWriter, r *http.Request) (*ServerConn, error) {
	q := r.URL.Query()
	s := &ServerConn{TTY: q.Get("tty") == "1", resize: make(chan Size, 1), gone: make(chan struct{})}
	if s.TTY {
		c, _ := strconv.ParseUint(q.Get("cols"), 10, 16)
		rw, _ := strconv.ParseUint(q.Get("rows"), 10, 16)
		s.Size = Size{uint16(c), uint16(rw)}
	}
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{Subprotocol}})
	if err != nil {
		return nil, err
	}
	if conn.Subprotocol() != Subprotocol {
		conn.Close(websocket.StatusPolicyViolation, "subprotocol "+Subprotocol+" required")
		return nil, errors.New("client did not speak " + Subprotocol)
	}
	conn.SetReadLimit(1 << 20)
	s.conn, s.ctx = conn, context.WithoutCancel(r.Context())
	s.stdinR, s.stdinW = io.Pipe()
	go s.readLoop()
	return s, nil
}

func (s *ServerConn) readLoop() {
	defer close(s.gone)
	for {
		_, msg, err := s.conn.Read(s.ctx)
		if err != nil {
			s.stdinW.CloseWithError(io.ErrClosedPipe)
			return
		}
		if len(msg) == 0 {
			continue
		}
		switch msg[0] {
		case FrameStdin:
			if _, err := s.stdinW.Write(msg[1:]); err != nil {
				// The command no longer reads; drop the rest.
				continue
			}
		case FrameStdinClose:
			s.stdinW.Close()
		case FrameResize:
			if sz, ok := ParseResize(msg[1:]); ok {
				select {
				case <-s.resize:
				default:
				}
				s.resize <- sz
			}
		}
	}
}

// Stdin is what the client types or pipes; EOF when it closes its stdin.
func (s *ServerConn) Stdin() io.Reader { return s.stdinR }

// Resizes delivers the client's terminal sizes (the latest, when several
// arrive before they are read).
func (s *ServerConn) Resizes() <-chan Size { return s.resize }

// Gone is closed when the client has disconnected.
func (s *ServerConn) Gone() <-chan struct{} { return s.gone }

// Stdout and Stderr send the command's output.
func (s *ServerConn) Stdout() io.Writer { return frameWriter{s, FrameStdout} }
func (s *ServerConn) Stderr() io.Writer { return frameWriter{s, FrameStderr} }

type frameWriter struct {
	s   *ServerConn
	typ byte
}

func (f frameWriter) Write(p []byte) (int, error) {
	if err := f.s.send(f.typ, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (s *ServerConn) send(typ byte, p []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.conn.Write(s.ctx, websocket.MessageBinary, append([]byte{typ}, p...))
}

// Exit sends the exit frame and closes the stream; msg, when set, is an
// error that ended the session rather than the command's own exit.
func (s *ServerConn) Exit(code int, msg string) {
	s.send(FrameExit, ExitPayload(code, msg))
	s.stdinR.CloseWithError(io.ErrClosedPipe)
	s.conn.Close(websocket.StatusNormalClosure, "")
}
