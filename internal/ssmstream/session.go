package ssmstream

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/gantry-dev/gantry/internal/execstream"
)

// Path is where the SSM data channels are served, beside the API and the
// agent's own exec streams (execstream).
const Path = "/ssm/"

// StreamURL is the data channel URL for an agent's exec stream URL
// (ws://host/exec/<session id>): the same host and session id under Path,
// so the bridge needs no table of its own, only the session id.
func StreamURL(execURL string) string {
	i := strings.LastIndex(execURL, "/exec/")
	if i < 0 {
		return execURL
	}
	return execURL[:i] + Path + execURL[i+len("/exec/"):]
}

// Timing of the data channel.
const (
	// openTimeout bounds the wait for the plugin's first (token) frame and
	// for its handshake response.
	openTimeout = 20 * time.Second
	// sizeWait is how long the bridge waits for the plugin's terminal size
	// before starting the command. The plugin sends its size as soon as its
	// shell handler is registered, and output sent before that is dropped
	// unacknowledged, so the size is also the sign the plugin is ready.
	sizeWait = 5 * time.Second
	// resendAfter: an output message not acknowledged by then is sent
	// again (the plugin drops output it is not ready for, and relies on
	// the agent's retransmission, as with the SSM agent).
	resendAfter = 1 * time.Second
	// drainTimeout bounds the wait for the last output's acknowledgements
	// before channel_closed, which the plugin acts on at once (it exits).
	drainTimeout = 5 * time.Second
	// chunk is the largest output payload per message.
	chunk = 16 << 10
	// agentVersion is what the handshake claims to be: an SSM agent recent
	// enough that the plugin uses its current features (TerminateSession
	// flag on interrupt).
	agentVersion = "3.3.0.0"
)

// Handler serves data channels at Path/<session id>. A client that asks for
// execstream's own subprotocol (`gantry exec`) is handed to Exec, so one
// streamUrl serves both clients.
type Handler struct {
	// Exec serves execstream clients (the agent's ExecHandler).
	Exec http.Handler
	// AgentURL is the agent's exec stream URL for a session id.
	AgentURL func(sessionID string) string
	// HTTPClient dials the agent; nil: http.DefaultClient.
	HTTPClient *http.Client
	Log        *slog.Logger
}

// Mount serves h's path on GET before next.
func Mount(next http.Handler, h *Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, Path) {
			h.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func wantsExecstream(r *http.Request) bool {
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if strings.TrimSpace(p) == execstream.Subprotocol {
				return true
			}
		}
	}
	return false
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := strings.TrimPrefix(r.URL.Path[strings.Index(r.URL.Path, Path):], Path)
	if id == "" || strings.ContainsAny(id, "/?#%") {
		http.Error(w, "The exec session does not exist.", http.StatusNotFound)
		return
	}
	if wantsExecstream(r) {
		if h.Exec == nil {
			http.Error(w, "The exec session does not exist.", http.StatusNotFound)
			return
		}
		h.Exec.ServeHTTP(w, r)
		return
	}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	conn.SetReadLimit(MinLength + MaxPayload)
	log := h.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &session{
		id: id, conn: conn, ctx: context.WithoutCancel(r.Context()), log: log,
		handshake: make(chan *Message, 1), sizes: make(chan execstream.Size, 1),
		unacked: map[int64]*pending{}, gone: make(chan struct{}), ended: make(chan struct{}),
	}
	s.stdinR, s.stdinW = io.Pipe()
	s.keys = make(chan []byte, 256)
	s.run(h)
}

// openDataChannel is the plugin's first, text, frame.
type openDataChannel struct {
	MessageSchemaVersion string
	RequestId            string
	TokenValue           string
	ClientId             string
	ClientVersion        string
}

type pending struct {
	frame []byte
	sent  time.Time
}

type session struct {
	id   string
	conn *websocket.Conn
	ctx  context.Context
	log  *slog.Logger

	wmu sync.Mutex // one writer on the websocket at a time

	mu      sync.Mutex
	outSeq  int64              // next output sequence number
	unacked map[int64]*pending // output not acknowledged yet
	inSeq   int64              // next input sequence number expected
	inBuf   map[int64]*Message // input that arrived ahead of inSeq

	handshake chan *Message // the handshake response
	sizes     chan execstream.Size
	gotSize   chan struct{}
	sizeOnce  sync.Once
	stdinR    *io.PipeReader
	stdinW    *io.PipeWriter
	keys      chan []byte        // keystrokes on their way to stdinW
	terminate context.CancelFunc // ends the command; set once it runs
	gone      chan struct{}      // closed when the plugin's side is gone
	ended     chan struct{}      // closed when run returns
}

func (s *session) run(h *Handler) {
	defer s.conn.CloseNow()
	defer close(s.ended)
	// Nothing reads the command's stdin once run returns.
	defer s.stdinR.CloseWithError(io.ErrClosedPipe)
	s.gotSize = make(chan struct{})
	rctx, cancel := context.WithTimeout(s.ctx, openTimeout)
	typ, first, err := s.conn.Read(rctx)
	cancel()
	var open openDataChannel
	if err != nil || typ != websocket.MessageText || json.Unmarshal(first, &open) != nil || open.TokenValue == "" {
		s.conn.Close(websocket.StatusPolicyViolation, "expected the data channel's open message with a token")
		return
	}
	cmdCtx, stop := context.WithCancel(s.ctx)
	defer stop()
	s.mu.Lock()
	s.terminate = stop
	s.mu.Unlock()
	go s.readLoop()
	go s.resendLoop()
	go s.pumpKeys()

	msg, ok := s.doHandshake()
	if !ok {
		s.close(msg)
		return
	}
	// Start the command once the plugin's shell is listening (its first
	// size), or after sizeWait with no size (a default terminal).
	size := execstream.Size{Cols: 80, Rows: 24}
	select {
	case <-s.gotSize:
		select {
		case size = <-s.sizes:
		default:
		}
	case <-time.After(sizeWait):
	case <-s.gone:
		return
	}
	err = execstream.Attach(cmdCtx, h.AgentURL(s.id), open.TokenValue, execstream.Options{
		TTY: true, Size: size, Stdin: s.stdinR, Stdout: outputWriter{s}, Resize: s.sizes,
		HTTPClient: h.HTTPClient,
	})
	var ee *execstream.ExitError
	closing := ""
	switch {
	case err == nil:
	case errors.As(err, &ee):
		// The agent's message says why the command did not run (127: no
		// such executable); the plugin prints channel_closed's Output.
		closing = ee.Message
		s.log.Info("ssm exec session: command exited", "session", s.id, "exitCode", ee.Code)
	default:
		select {
		case <-s.gone:
			return
		default:
		}
		if cmdCtx.Err() != nil {
			// The plugin asked to end the session (TerminateSession).
			break
		}
		s.log.Warn("ssm exec session: attach", "session", s.id, "err", err)
		closing = strings.TrimPrefix(err.Error(), "attach to exec session: ")
	}
	s.drain()
	s.close(closing)
}

// doHandshake asks the plugin for an interactive commands session; false
// and why when the plugin refused or never answered.
func (s *session) doHandshake() (string, bool) {
	req, _ := json.Marshal(map[string]any{
		"AgentVersion": agentVersion,
		"RequestedClientActions": []map[string]any{{
			"ActionType":       "SessionType",
			"ActionParameters": map[string]any{"SessionType": "InteractiveCommands", "Properties": nil},
		}},
	})
	start := time.Now()
	if err := s.sendOutput(PayloadHandshakeRequest, req); err != nil {
		return "", false
	}
	var resp *Message
	select {
	case resp = <-s.handshake:
	case <-time.After(openTimeout):
		return "The session manager plugin did not answer the handshake.", false
	case <-s.gone:
		return "", false
	}
	var hr struct {
		ProcessedClientActions []struct {
			ActionType   string
			ActionStatus int
			Error        string
		}
		Errors []string
	}
	if err := json.Unmarshal(resp.Payload, &hr); err != nil {
		return "The session manager plugin's handshake response is not valid.", false
	}
	if len(hr.Errors) > 0 {
		return "The session manager plugin refused the session: " + strings.Join(hr.Errors, "; "), false
	}
	done, _ := json.Marshal(map[string]any{"HandshakeTimeToComplete": time.Since(start).Nanoseconds(), "CustomerMessage": ""})
	if err := s.sendOutput(PayloadHandshakeComplete, done); err != nil {
		return "", false
	}
	return "", true
}

// pumpKeys writes the keystrokes to the command's stdin in order.
func (s *session) pumpKeys() {
	for {
		select {
		case k := <-s.keys:
			if _, err := s.stdinW.Write(k); err != nil {
				return
			}
		case <-s.gone:
			s.stdinW.CloseWithError(io.EOF)
			return
		case <-s.ended:
			return
		}
	}
}

func (s *session) readLoop() {
	defer close(s.gone)
	for {
		typ, b, err := s.conn.Read(s.ctx)
		if err != nil {
			s.stop()
			return
		}
		if typ != websocket.MessageBinary {
			continue
		}
		m, err := Decode(b)
		if err != nil {
			// One bad frame is the peer's bug; the stream may still be
			// usable, and the plugin resends what we do not acknowledge.
			s.log.Debug("ssm exec session: bad frame", "session", s.id, "err", err)
			continue
		}
		switch m.Type {
		case TypeAcknowledge:
			var ack struct {
				AcknowledgedMessageSequenceNumber int64
			}
			if json.Unmarshal(m.Payload, &ack) == nil {
				s.mu.Lock()
				delete(s.unacked, ack.AcknowledgedMessageSequenceNumber)
				s.mu.Unlock()
			}
		case TypeInput:
			s.ack(m)
			for _, in := range s.inOrder(m) {
				s.deliver(in)
			}
		case TypeChannelClosed:
			s.stop()
			return
		}
	}
}

// inOrder returns the input messages m makes deliverable, in sequence;
// duplicates (the plugin's retransmissions) and stale ones yield none.
func (s *session) inOrder(m *Message) []*Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.SequenceNumber < s.inSeq {
		return nil
	}
	if m.SequenceNumber > s.inSeq {
		if s.inBuf == nil {
			s.inBuf = map[int64]*Message{}
		}
		if len(s.inBuf) < 1000 {
			s.inBuf[m.SequenceNumber] = m
		}
		return nil
	}
	out := []*Message{m}
	s.inSeq++
	for {
		n, ok := s.inBuf[s.inSeq]
		if !ok {
			return out
		}
		delete(s.inBuf, s.inSeq)
		out = append(out, n)
		s.inSeq++
	}
}

func (s *session) deliver(m *Message) {
	switch m.PayloadType {
	case PayloadHandshakeResponse:
		select {
		case s.handshake <- m:
		default:
		}
	case PayloadOutput:
		// Keystrokes, handed to pumpKeys so that a command that does not
		// read its terminal never stalls acknowledgements; only a full
		// queue (256 unread batches) does, as a full terminal would.
		select {
		case s.keys <- m.Payload:
		case <-s.ended:
		}
	case PayloadSize:
		var sz struct{ Cols, Rows uint32 }
		if json.Unmarshal(m.Payload, &sz) != nil || sz.Cols == 0 || sz.Rows == 0 || sz.Cols > 0xffff || sz.Rows > 0xffff {
			return
		}
		select {
		case <-s.sizes:
		default:
		}
		s.sizes <- execstream.Size{Cols: uint16(sz.Cols), Rows: uint16(sz.Rows)}
		s.sizeOnce.Do(func() { close(s.gotSize) })
	case PayloadFlag:
		// TerminateSession (2) and the port forwarding flags: all end an
		// interactive command's session.
		s.stop()
	}
}

func (s *session) stop() {
	s.mu.Lock()
	t := s.terminate
	s.mu.Unlock()
	if t != nil {
		t()
	}
}

func (s *session) ack(m *Message) {
	p, _ := json.Marshal(map[string]any{
		"AcknowledgedMessageType":           m.Type,
		"AcknowledgedMessageId":             UUIDString(m.MessageID),
		"AcknowledgedMessageSequenceNumber": m.SequenceNumber,
		"IsSequentialMessage":               true,
	})
	s.write(&Message{Type: TypeAcknowledge, SchemaVersion: 1, Flags: 3, Payload: p})
}

// sendOutput sends one output_stream_data message and keeps it until the
// plugin acknowledges it.
func (s *session) sendOutput(pt PayloadType, p []byte) error {
	s.mu.Lock()
	seq := s.outSeq
	s.outSeq++
	m := &Message{Type: TypeOutput, SchemaVersion: 1, SequenceNumber: seq, PayloadType: pt, Payload: p}
	b, err := s.encode(m)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	s.unacked[seq] = &pending{frame: b, sent: time.Now()}
	s.mu.Unlock()
	return s.writeFrame(b)
}

func (s *session) encode(m *Message) ([]byte, error) {
	m.CreatedDate = uint64(time.Now().UnixMilli())
	rand.Read(m.MessageID[:])
	m.MessageID[6] = m.MessageID[6]&0x0f | 0x40 // version 4
	m.MessageID[8] = m.MessageID[8]&0x3f | 0x80 // RFC 4122 variant
	return Encode(m)
}

func (s *session) write(m *Message) error {
	b, err := s.encode(m)
	if err != nil {
		return err
	}
	return s.writeFrame(b)
}

func (s *session) writeFrame(b []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	return s.conn.Write(ctx, websocket.MessageBinary, b)
}

func (s *session) resendLoop() {
	t := time.NewTicker(resendAfter / 2)
	defer t.Stop()
	for {
		select {
		case <-s.gone:
			return
		case <-t.C:
		}
		var again [][]byte
		s.mu.Lock()
		for _, p := range s.unacked {
			if time.Since(p.sent) >= resendAfter {
				p.sent = time.Now()
				again = append(again, p.frame)
			}
		}
		s.mu.Unlock()
		for _, b := range again {
			if s.writeFrame(b) != nil {
				return
			}
		}
	}
}

// drain waits until the plugin has acknowledged all output, so that
// channel_closed (which makes it exit) cannot overtake the last output.
func (s *session) drain() {
	deadline := time.Now().Add(drainTimeout)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		n := len(s.unacked)
		s.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-s.gone:
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// close sends channel_closed, with output the plugin prints as the reason
// when the session ended other than by the command's exit, and closes.
func (s *session) close(output string) {
	var id [16]byte
	rand.Read(id[:])
	p, _ := json.Marshal(map[string]any{
		"MessageId":     UUIDString(id),
		"CreatedDate":   time.Now().UTC().Format("2006-01-02T15:04:05.000Z"),
		"DestinationId": s.id,
		"SessionId":     s.id,
		"MessageType":   TypeChannelClosed,
		"SchemaVersion": 1,
		"Output":        output,
	})
	s.write(&Message{Type: TypeChannelClosed, SchemaVersion: 1, Payload: p})
	s.conn.Close(websocket.StatusNormalClosure, "")
}

// outputWriter turns the command's terminal output into output messages.
type outputWriter struct{ s *session }

func (o outputWriter) Write(p []byte) (int, error) {
	for off := 0; off < len(p); off += chunk {
		end := min(off+chunk, len(p))
		if err := o.s.sendOutput(PayloadOutput, append([]byte(nil), p[off:end]...)); err != nil {
			return off, err
		}
	}
	return len(p), nil
}
