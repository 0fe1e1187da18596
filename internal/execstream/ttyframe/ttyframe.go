// Package ttyframe is how the agent talks to `gantry exec-tty`, the helper
// that holds an ECS Exec terminal inside a sandboxed container: the one
// pipe the runtime gives an exec'd process carries both the terminal's
// input and its window-size changes, so each is a frame.
//
// A frame is a type byte, a big-endian uint32 length and that many bytes:
// 'd' is input for the terminal, 'w' a window size (rows then columns, two
// big-endian uint16s).
package ttyframe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Version is the protocol's name, the helper's first argument: an agent and
// a helper of different versions refuse each other instead of misreading.
const Version = "v1"

// MaxData bounds a data frame: the agent never writes more, and a length
// beyond it is a corrupt stream, not an allocation to make.
const MaxData = 64 << 10

const (
	typeData   = 'd'
	typeResize = 'w'
)

// Size is a terminal's window size.
type Size struct{ Rows, Cols uint16 }

// Frame is one decoded frame: Data, or a Resize.
type Frame struct {
	Data   []byte
	Resize *Size
}

// Writer encodes frames; its methods may be called from several goroutines.
type Writer struct {
	mu sync.Mutex
	w  io.Writer
}

func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write sends p as data frames.
func (w *Writer) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), MaxData)]
		if err := w.frame(typeData, chunk); err != nil {
			return n, err
		}
		n += len(chunk)
		p = p[len(chunk):]
	}
	return n, nil
}

// Resize sends a window size.
func (w *Writer) Resize(s Size) error {
	var b [4]byte
	binary.BigEndian.PutUint16(b[0:], s.Rows)
	binary.BigEndian.PutUint16(b[2:], s.Cols)
	return w.frame(typeResize, b[:])
}

func (w *Writer) frame(typ byte, payload []byte) error {
	buf := make([]byte, 5+len(payload))
	buf[0] = typ
	binary.BigEndian.PutUint32(buf[1:], uint32(len(payload)))
	copy(buf[5:], payload)
	w.mu.Lock()
	defer w.mu.Unlock()
	_, err := w.w.Write(buf)
	return err
}

// Reader decodes frames.
type Reader struct {
	r   io.Reader
	hdr [5]byte
}

func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// ErrCorrupt is a stream that is not frames.
var ErrCorrupt = errors.New("ttyframe: corrupt stream")

// Next returns the next frame, or io.EOF at the end of the stream.
// Unknown frame types are skipped, so a newer agent's extras do no harm.
func (r *Reader) Next() (Frame, error) {
	for {
		if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
			if err == io.ErrUnexpectedEOF {
				return Frame{}, ErrCorrupt
			}
			return Frame{}, err
		}
		n := binary.BigEndian.Uint32(r.hdr[1:])
		if n > MaxData {
			return Frame{}, fmt.Errorf("%w: frame of %d bytes", ErrCorrupt, n)
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(r.r, payload); err != nil {
			return Frame{}, ErrCorrupt
		}
		switch r.hdr[0] {
		case typeData:
			return Frame{Data: payload}, nil
		case typeResize:
			if n != 4 {
				return Frame{}, fmt.Errorf("%w: window size of %d bytes", ErrCorrupt, n)
			}
			return Frame{Resize: &Size{Rows: binary.BigEndian.Uint16(payload[0:]), Cols: binary.BigEndian.Uint16(payload[2:])}}, nil
		}
	}
}
