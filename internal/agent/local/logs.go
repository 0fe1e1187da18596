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
	"github.com/prometheus/client_golang/prometheus"

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
// and reported in the stream itself (a "[gantry] ... dropped" event where
// the gap is, saying how many lines and bytes and between which times), in
// the server log and in gantry_log_dropped_lines_total, so a gap is never
// silent.

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
	dropFirst    int64 // when the first and last of them were read (ms)
	dropLast     int64
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
		if cp.dropped == 0 {
			cp.dropFirst = ts
		}
		cp.dropped++
		cp.droppedBytes += len(line)
		cp.dropLast = ts
		cp.dropWhy = "the log buffer (max-buffer-size) was full"
		if cp.writeErr != nil {
			cp.dropWhy += " while the spool could not be written: " + cp.writeErr.Error()
		}
		droppedLines.WithLabelValues("buffer_full").Inc()
		droppedBytes.WithLabelValues("buffer_full").Add(float64(len(line)))
		return
	}
	cp.reportDropsLocked(ts)
	cp.pending = append(cp.pending, spoolRecord{ts, line})
	cp.pendingBytes += len(line)
	if cp.a.ctx.Err() != nil {
		// The agent is stopping and its spooler may be gone, but
		// containerd's copy goroutines read the pipes until the process
		// exits: what they read now goes straight to the spool, for the
		// next agent, or it would be lost.
		cp.spoolLocked()
		return
	}
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
	from, to := time.UnixMilli(cp.dropFirst).UTC().Format(dropTime), time.UnixMilli(cp.dropLast).UTC().Format(dropTime)
	msg := fmt.Sprintf("[gantry] %d log lines (%d bytes) were dropped between %s and %s: %s", cp.dropped, cp.droppedBytes, from, to, cp.dropWhy)
	cp.a.log.Warn("log lines dropped", "spool", cp.key, "lines", cp.dropped, "bytes", cp.droppedBytes, "from", from, "to", to, "why", cp.dropWhy)
	cp.pending = append(cp.pending, spoolRecord{ts, msg})
	cp.pendingBytes += len(msg)
	cp.dropped, cp.droppedBytes = 0, 0
}

const dropTime = "2006-01-02T15:04:05.000Z"

// The loss counters, for Prometheus: a dropped line is reported in its
// stream too, but an operator watching many tasks needs one number.
var (
	droppedLines = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gantry_log_dropped_lines_total",
		Help: "Container log lines (awslogs) that could not be kept, by reason: buffer_full (non-blocking mode, max-buffer-size reached, as when the disk is full), shutdown (still in memory when the agent stopped with the disk full).",
	}, []string{"reason"})
	droppedBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gantry_log_dropped_bytes_total",
		Help: "Bytes of the lines counted by gantry_log_dropped_lines_total.",
	}, []string{"reason"})
	spoolWriteFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gantry_log_spool_write_failures_total",
		Help: "Failed writes to awslogs spools on disk (a full disk, usually); the lines stay in memory and are retried.",
	})
	shipFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gantry_log_ship_failures_total",
		Help: "Failed attempts to store spooled log lines in CloudWatch Logs (logs.db full, usually); they are retried.",
	})
)

// LogCollectors are the awslogs capture's Prometheus metrics.
func LogCollectors() []prometheus.Collector {
	return []prometheus.Collector{droppedLines, droppedBytes, spoolWriteFailures, shipFailures}
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
			if n := len(cp.pending); n > 0 {
				// Only when the disk is full: nowhere is left to keep them.
				cp.a.log.Error("log lines lost at shutdown: the spool could not be written", "spool", cp.key, "lines", n, "bytes", cp.pendingBytes, "err", cp.writeErr)
				droppedLines.WithLabelValues("shutdown").Add(float64(n))
				droppedBytes.WithLabelValues("shutdown").Add(float64(cp.pendingBytes))
			}
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
	return cp.spoolLocked()
}

func (cp *capture) spoolLocked() bool {
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
			spoolWriteFailures.Inc()
			if cp.writeErr == nil {
				cp.a.log.Warn("log spool write failed; retrying", "spool", cp.key, "err", err)
			}
			cp.writeErr = err
			select { // the shipper may be able to free the spool's space
			case cp.wakeShip <- struct{}{}:
			default:
			}
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
	var failing error // the sink's error while it lasts
	for {
		cp.mu.Lock()
		size, spooled, full := cp.size, cp.spooled, cp.writeErr != nil
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
				shipFailures.Inc()
				if failing == nil || failing.Error() != err.Error() {
					cp.a.log.Warn("storing log lines failed; retrying", "spool", cp.key, "err", err)
				}
				failing = err
				select {
				case <-time.After(backoff):
				case <-cp.a.ctx.Done():
					return
				}
				// The sink is local and a retry cheap: a short ceiling lets
				// logs resume soon after a full disk has room again.
				backoff = min(2*backoff, 5*time.Second)
				continue
			}
			if failing != nil {
				cp.a.log.Info("storing log lines again", "spool", cp.key)
				failing = nil
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
		// A spool everything in which is stored starts over when it is big,
		// or at once when the disk is full, so its space goes to new lines.
		if size >= rotateSize || full && size > 0 {
			cp.mu.Lock()
			// The new generation is recorded first: offsets of the next
			// agent would otherwise restart below what the sink has seen,
			// and its lines be taken for repeats.
			if cp.size == pos && writePos(cp.dir, cp.gen+1, 0) == nil && cp.f.Truncate(0) == nil {
				cp.size, cp.gen = 0, cp.gen+1
				gen, pos = cp.gen, 0
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
// resending, which the sink's offsets make harmless. On a full disk the
// atomic write fails (its new file needs a block), so the existing file is
// overwritten in place: 16 bytes in one sector, which needs no new space.
func writePos(dir string, gen, pos int64) error {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:], uint64(gen))
	binary.BigEndian.PutUint64(b[8:], uint64(pos))
	path := filepath.Join(dir, posFile)
	err := writeFileAtomic(path, b[:])
	if err == nil {
		return nil
	}
	os.Remove(path + ".tmp")
	f, ferr := os.OpenFile(path, os.O_WRONLY, 0)
	if ferr != nil {
		return err
	}
	_, werr := f.WriteAt(b[:], 0)
	return errors.Join(werr, f.Close())
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
