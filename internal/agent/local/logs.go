package local

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/docker/go-units"

	"github.com/gantry-dev/gantry/internal/agent"
)

// Container output for the awslogs driver goes through a spool on disk:
//
//	containerd FIFOs -> lineWriter -> pending (memory) -> spool file -> shipper -> LogSink
//
// Lines are timestamped as they are read. The spool (DataDir/agent/logs/
// <task>/<container>/) holds them until the sink has stored them, so a
// restart of the agent loses nothing: lines still in containerd's pipes wait
// there, lines in the spool are shipped by the next agent. When the disk is
// full the spool cannot grow: in blocking mode the container's writes then
// wait, in non-blocking mode lines beyond max-buffer-size are dropped, and in
// both the spool is retried until space returns. Dropped lines are counted
// and reported in the stream itself, so a gap is never silent.

const (
	spoolFile  = "spool"
	posFile    = "pos"
	destFile   = "dest.json"
	eofFile    = "eof"
	rotateSize = 64 << 20 // a fully shipped spool bigger than this starts over
	// maxLine is the largest event the awslogs driver sends; longer lines
	// are split, as Docker's driver splits them.
	maxLine = 256*1024 - 26
	// blockingBuffer is how much a container in blocking mode may have in
	// memory before its writes wait for the spool.
	blockingBuffer   = 1 << 20
	defaultMaxBuffer = 1 << 20
)

type spoolRecord struct {
	ts  int64
	msg string
}

// capture is one container's awslogs pipeline.
type capture struct {
	a        *Agent
	key      string // task/container
	dir      string
	dest     agent.LogStreamRef
	blocking bool
	maxBuf   int

	mu           sync.Mutex
	cond         *sync.Cond // writers waiting for room (blocking mode)
	pending      []spoolRecord
	pendingBytes int
	dropped      int // lines dropped since the last report
	droppedBytes int
	dropWhy      string
	closed       bool // no more input
	spooled      bool // closed and everything pending is in the spool
	f            *os.File
	size         int64 // of the spool, in whole records
	gen          int64 // how many times the spool started over
	writeErr     error // the spool's last write failure, while it lasts
	lines        []*lineWriter

	wakeSpool chan struct{}
	wakeShip  chan struct{}
	done      chan struct{} // shipper finished: everything stored
}

func (a *Agent) logsDir() string { return filepath.Join(a.cfg.DataDir, "agent", "logs") }

// logDest works out where a container's awslogs output goes, as ECS names
// it: group from awslogs-group, stream PREFIX/CONTAINER/TASK_ID.
func logDest(spec agent.TaskSpec, c *agent.ContainerSpec) (agent.OpenLogStream, error) {
	o := c.LogConfig.Options
	var req agent.OpenLogStream
	req.Group = o["awslogs-group"]
	if req.Group == "" {
		return req, errors.New("awslogs-group is required")
	}
	// arn:aws:ecs:REGION:ACCOUNT:cluster/NAME
	if parts := strings.SplitN(spec.ClusterARN, ":", 6); len(parts) == 6 {
		req.Region, req.Account = parts[3], parts[4]
	}
	if r := o["awslogs-region"]; r != "" {
		req.Region = r
	}
	req.Stream = c.Name + "/" + spec.TaskID
	if p := o["awslogs-stream-prefix"]; p != "" {
		req.Stream = p + "/" + req.Stream
	}
	req.CreateGroup = o["awslogs-create-group"] == "true"
	return req, nil
}

func logMode(c *agent.ContainerSpec) (blocking bool, maxBuf int, err error) {
	o := c.LogConfig.Options
	switch o["mode"] {
	case "", "blocking":
		blocking = true
	case "non-blocking":
	default:
		return false, 0, fmt.Errorf("invalid mode %q: blocking or non-blocking", o["mode"])
	}
	maxBuf = defaultMaxBuffer
	if v := o["max-buffer-size"]; v != "" {
		n, err := units.RAMInBytes(v)
		if err != nil || n <= 0 {
			return false, 0, fmt.Errorf("invalid max-buffer-size %q", v)
		}
		maxBuf = int(n)
	}
	return blocking, maxBuf, nil
}

// openCapture returns the container's capture, creating its stream and
// spool on first use. The error is the one Fargate gives a task whose
// log configuration does not work.
func (a *Agent) openCapture(ctx context.Context, spec agent.TaskSpec, c *agent.ContainerSpec) (*capture, error) {
	key := spec.TaskID + "/" + c.Name
	a.logMu.Lock()
	cp := a.captures[key]
	a.logMu.Unlock()
	if cp != nil {
		return cp, nil
	}
	fail := func(err error) error {
		return fmt.Errorf("ResourceInitializationError: failed to validate logger args: %w", err)
	}
	req, err := logDest(spec, c)
	if err != nil {
		return nil, fail(err)
	}
	blocking, maxBuf, err := logMode(c)
	if err != nil {
		return nil, fail(err)
	}
	if a.cfg.LogSink == nil {
		return nil, fail(errors.New("this agent has no log sink"))
	}
	if err := a.cfg.LogSink.OpenStream(ctx, req); err != nil {
		return nil, fail(fmt.Errorf("failed to create CloudWatch log stream: %w", err))
	}
	dir := filepath.Join(a.logsDir(), spec.TaskID, c.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	b, _ := json.Marshal(struct {
		agent.LogStreamRef
		Blocking bool `json:"blocking"`
		MaxBuf   int  `json:"maxBufferSize"`
	}{req.LogStreamRef, blocking, maxBuf})
	if err := writeFileAtomic(filepath.Join(dir, destFile), b); err != nil {
		return nil, err
	}
	return a.loadCapture(key, dir)
}

// loadCapture opens a spool directory and starts its goroutines.
func (a *Agent) loadCapture(key, dir string) (*capture, error) {
	a.logMu.Lock()
	defer a.logMu.Unlock()
	if cp := a.captures[key]; cp != nil {
		return cp, nil
	}
	b, err := os.ReadFile(filepath.Join(dir, destFile))
	if err != nil {
		return nil, err
	}
	var d struct {
		agent.LogStreamRef
		Blocking bool `json:"blocking"`
		MaxBuf   int  `json:"maxBufferSize"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", destFile, err)
	}
	cp := &capture{
		a: a, key: key, dir: dir, dest: d.LogStreamRef, blocking: d.Blocking, maxBuf: d.MaxBuf,
		wakeSpool: make(chan struct{}, 1), wakeShip: make(chan struct{}, 1), done: make(chan struct{}),
	}
	cp.cond = sync.NewCond(&cp.mu)
	if cp.f, err = os.OpenFile(filepath.Join(dir, spoolFile), os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		return nil, err
	}
	// A crash may have left half a record at the end: it was never
	// acknowledged to anyone, so it goes.
	if cp.size, err = wholeRecords(cp.f); err != nil {
		cp.f.Close()
		return nil, err
	}
	if err := cp.f.Truncate(cp.size); err != nil {
		cp.f.Close()
		return nil, err
	}
	cp.gen, _ = readPos(dir)
	if _, err := os.Stat(filepath.Join(dir, eofFile)); err == nil {
		cp.closed, cp.spooled = true, true
	}
	a.captures[key] = cp
	a.logWG.Add(2)
	go cp.spooler()
	go cp.shipper()
	return cp, nil
}

// resumeCaptures picks up the spools an earlier agent left, so their
// lines are shipped even if their task has ended since.
func (a *Agent) resumeCaptures() {
	tasks, _ := os.ReadDir(a.logsDir())
	for _, t := range tasks {
		ctrs, _ := os.ReadDir(filepath.Join(a.logsDir(), t.Name()))
		for _, c := range ctrs {
			key := t.Name() + "/" + c.Name()
			if _, err := a.loadCapture(key, filepath.Join(a.logsDir(), t.Name(), c.Name())); err != nil {
				a.log.Warn("cannot resume log spool", "spool", key, "err", err)
			}
		}
	}
}

// finishTaskLogs closes the input of every capture of a task that has no
// containers left.
func (a *Agent) finishTaskLogs(taskID string) {
	a.logMu.Lock()
	var cps []*capture
	for k, cp := range a.captures {
		if strings.HasPrefix(k, taskID+"/") {
			cps = append(cps, cp)
		}
	}
	a.logMu.Unlock()
	for _, cp := range cps {
		cp.finish()
	}
}

func (a *Agent) captureOf(taskID, container string) *capture {
	a.logMu.Lock()
	defer a.logMu.Unlock()
	return a.captures[taskID+"/"+container]
}

// writers returns the two ends containerd copies stdout and stderr into.
func (cp *capture) writers() (stdout, stderr io.Writer) {
	o, e := &lineWriter{cp: cp}, &lineWriter{cp: cp}
	cp.mu.Lock()
	cp.lines = append(cp.lines, o, e)
	cp.mu.Unlock()
	return o, e
}

// lineWriter cuts a byte stream into lines. Only containerd's copy
// goroutine for its stream calls Write.
type lineWriter struct {
	cp   *capture
	part []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	now := time.Now().UnixMilli()
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.part = append(w.part, p...)
			for len(w.part) >= maxLine {
				w.cp.add(now, string(w.part[:maxLine]))
				w.part = append(w.part[:0], w.part[maxLine:]...)
			}
			break
		}
		line := p[:i]
		if len(w.part) > 0 {
			line = append(w.part, line...)
			w.part = w.part[:0]
		}
		for len(line) > maxLine {
			w.cp.add(now, string(line[:maxLine]))
			line = line[maxLine:]
		}
		w.cp.add(now, string(line))
		p = p[i+1:]
	}
	return n, nil
}

// add queues one line. Empty lines are skipped, as the awslogs driver skips
// them (CloudWatch takes no empty events).
func (cp *capture) add(ts int64, line string) {
	line = strings.TrimSuffix(line, "\r")
	if line == "" {
		return
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	for cp.blocking && cp.pendingBytes >= blockingBuffer && !cp.closed && cp.a.ctx.Err() == nil {
		cp.cond.Wait()
	}
	if !cp.blocking && cp.pendingBytes+len(line) > cp.maxBuf {
		cp.dropped++
		cp.droppedBytes += len(line)
		cp.dropWhy = "the log buffer (max-buffer-size) was full"
		if cp.writeErr != nil {
			cp.dropWhy += " while the spool could not be written: " + cp.writeErr.Error()
		}
		return
	}
	cp.reportDropsLocked(ts)
	cp.pending = append(cp.pending, spoolRecord{ts, line})
	cp.pendingBytes += len(line)
	select {
	case cp.wakeSpool <- struct{}{}:
	default:
	}
}

// reportDropsLocked puts a line saying what was lost where the loss was.
func (cp *capture) reportDropsLocked(ts int64) {
	if cp.dropped == 0 {
		return
	}
	msg := fmt.Sprintf("[gantry] %d log lines (%d bytes) were dropped: %s", cp.dropped, cp.droppedBytes, cp.dropWhy)
	cp.a.log.Warn("log lines dropped", "spool", cp.key, "lines", cp.dropped, "bytes", cp.droppedBytes, "why", cp.dropWhy)
	cp.pending = append(cp.pending, spoolRecord{ts, msg})
	cp.pendingBytes += len(msg)
	cp.dropped, cp.droppedBytes = 0, 0
}

// finish says no more lines will come: the container has exited and
// containerd has copied everything it wrote.
func (cp *capture) finish() {
	// A last line without its newline (say, before a crash) still counts.
	cp.mu.Lock()
	ws := cp.lines
	cp.lines = nil
	cp.mu.Unlock()
	for _, w := range ws {
		if len(w.part) > 0 {
			cp.add(time.Now().UnixMilli(), string(w.part))
			w.part = nil
		}
	}
	cp.mu.Lock()
	if !cp.closed {
		cp.reportDropsLocked(time.Now().UnixMilli())
		cp.closed = true
		cp.cond.Broadcast()
	}
	cp.mu.Unlock()
	select {
	case cp.wakeSpool <- struct{}{}:
	default:
	}
}

// spooler moves pending lines into the spool file.
func (cp *capture) spooler() {
	defer cp.a.logWG.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-cp.wakeSpool:
		case <-tick.C:
		case <-cp.a.ctx.Done():
			cp.spool() // what is in memory goes to disk if it can
			cp.mu.Lock()
			cp.cond.Broadcast()
			cp.mu.Unlock()
			return
		}
		if cp.spool() {
			return
		}
	}
}

// spool writes what is pending; it reports true once input has ended and
// all of it is in the file.
func (cp *capture) spool() bool {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.spooled {
		return true
	}
	if len(cp.pending) > 0 {
		var buf bytes.Buffer
		var hdr [12]byte
		for _, r := range cp.pending {
			binary.BigEndian.PutUint64(hdr[:8], uint64(r.ts))
			binary.BigEndian.PutUint32(hdr[8:], uint32(len(r.msg)))
			buf.Write(hdr[:])
			buf.WriteString(r.msg)
		}
		if _, err := cp.f.WriteAt(buf.Bytes(), cp.size); err != nil {
			// Disk full or failing: cut any half-written part and keep the
			// lines in memory for the next try.
			cp.f.Truncate(cp.size)
			if cp.writeErr == nil {
				cp.a.log.Warn("log spool write failed; retrying", "spool", cp.key, "err", err)
			}
			cp.writeErr = err
			return false
		}
		if cp.writeErr != nil {
			cp.a.log.Info("log spool writable again", "spool", cp.key)
			cp.writeErr = nil
		}
		cp.size += int64(buf.Len())
		cp.pending, cp.pendingBytes = cp.pending[:0], 0
		cp.cond.Broadcast()
		select {
		case cp.wakeShip <- struct{}{}:
		default:
		}
	}
	if cp.closed {
		if err := os.WriteFile(filepath.Join(cp.dir, eofFile), nil, 0o600); err != nil {
			return false
		}
		cp.spooled = true
		select {
		case cp.wakeShip <- struct{}{}:
		default:
		}
		return true
	}
	return false
}

// shipper sends the spool to the sink in batches and removes it once the
// input has ended and everything is stored.
func (cp *capture) shipper() {
	defer cp.a.logWG.Done()
	defer close(cp.done)
	gen, pos := readPos(cp.dir)
	backoff := time.Second
	for {
		cp.mu.Lock()
		size, spooled := cp.size, cp.spooled
		if gen != cp.gen { // the spool started over before pos was saved
			pos = 0
		}
		cp.mu.Unlock()
		if pos < size {
			batch, next, err := readBatch(cp.f, pos, size, gen)
			if err == nil && len(batch) > 0 {
				err = cp.a.cfg.LogSink.PutLogs(cp.a.ctx, agent.LogBatch{LogStreamRef: cp.dest, Events: batch})
				if errors.Is(err, agent.ErrLogGroupGone) {
					cp.a.log.Warn("log group deleted; dropping log lines", "spool", cp.key, "lines", len(batch), "err", err)
					err = nil
				}
			}
			if err != nil {
				if cp.a.ctx.Err() != nil {
					return
				}
				cp.a.log.Warn("shipping logs failed; retrying", "spool", cp.key, "err", err)
				select {
				case <-time.After(backoff):
				case <-cp.a.ctx.Done():
					return
				}
				backoff = min(2*backoff, 30*time.Second)
				continue
			}
			backoff = time.Second
			pos = next
			writePos(cp.dir, gen, pos)
			continue
		}
		if spooled {
			cp.f.Close()
			cp.a.logMu.Lock()
			delete(cp.a.captures, cp.key)
			cp.a.logMu.Unlock()
			os.RemoveAll(cp.dir)
			os.Remove(filepath.Dir(cp.dir)) // the task's directory, once empty
			return
		}
		if size >= rotateSize {
			cp.mu.Lock()
			if cp.size == pos && cp.f.Truncate(0) == nil {
				cp.size, cp.gen = 0, cp.gen+1
				gen, pos = cp.gen, 0
				writePos(cp.dir, gen, pos)
			}
			cp.mu.Unlock()
			continue
		}
		select {
		case <-cp.wakeShip:
		case <-time.After(time.Second):
		case <-cp.a.ctx.Done():
			return
		}
	}
}

// readBatch reads whole records from [pos, size), up to CloudWatch's batch
// limits. An event's offset is its place in the spool across restarts of
// the spool: gen in the high bits.
func readBatch(f *os.File, pos, size, gen int64) ([]agent.LogEvent, int64, error) {
	const maxEvents, maxBytes = 10000, 1 << 20
	n := min(size-pos, maxBytes+maxEvents*12)
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, pos); err != nil && !errors.Is(err, io.EOF) {
		return nil, pos, err
	}
	var out []agent.LogEvent
	bytes, off := 0, 0
	for len(out) < maxEvents && off+12 <= len(buf) {
		ts := int64(binary.BigEndian.Uint64(buf[off:]))
		l := int(binary.BigEndian.Uint32(buf[off+8:]))
		if off+12+l > len(buf) || (len(out) > 0 && bytes+l+26 > maxBytes) {
			break
		}
		out = append(out, agent.LogEvent{Timestamp: ts, Message: string(buf[off+12 : off+12+l]), Offset: gen<<40 | (pos + int64(off))})
		bytes += l + 26
		off += 12 + l
	}
	if len(out) == 0 && off+12 <= len(buf) {
		return nil, pos, fmt.Errorf("log spool damaged at offset %d", pos)
	}
	return out, pos + int64(off), nil
}

// wholeRecords is the length of the spool's prefix of complete records.
func wholeRecords(f *os.File) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	var hdr [12]byte
	var pos int64
	for pos+12 <= st.Size() {
		if _, err := f.ReadAt(hdr[:], pos); err != nil {
			return 0, err
		}
		next := pos + 12 + int64(binary.BigEndian.Uint32(hdr[8:]))
		if next > st.Size() {
			break
		}
		pos = next
	}
	return pos, nil
}

func readPos(dir string) (gen, pos int64) {
	b, err := os.ReadFile(filepath.Join(dir, posFile))
	if err != nil || len(b) != 16 {
		return 0, 0
	}
	return int64(binary.BigEndian.Uint64(b)), int64(binary.BigEndian.Uint64(b[8:]))
}

// writePos records how far the sink has stored. Losing it only means
// resending, which the sink's offsets make harmless.
func writePos(dir string, gen, pos int64) {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:], uint64(gen))
	binary.BigEndian.PutUint64(b[8:], uint64(pos))
	writeFileAtomic(filepath.Join(dir, posFile), b[:])
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
