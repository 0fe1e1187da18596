package ttyframe

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	big := strings.Repeat("x", MaxData+10) // split into two frames
	w.Write([]byte("ls\n"))
	w.Resize(Size{Rows: 41, Cols: 123})
	w.Write([]byte(big))
	buf.Write([]byte{'?', 0, 0, 0, 1, 'z'}) // an unknown type is skipped
	w.Write([]byte("exit\n"))

	r := NewReader(&buf)
	var data bytes.Buffer
	var sizes []Size
	for {
		f, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if f.Resize != nil {
			sizes = append(sizes, *f.Resize)
			if data.String() != "ls\n" {
				t.Fatalf("resize out of order after %q", data.String())
			}
		}
		data.Write(f.Data)
	}
	if data.String() != "ls\n"+big+"exit\n" || len(sizes) != 1 || sizes[0] != (Size{41, 123}) {
		t.Fatalf("data %d bytes, sizes %v", data.Len(), sizes)
	}
}

func TestCorrupt(t *testing.T) {
	for _, in := range [][]byte{
		{'d', 0, 0},                      // short header
		{'d', 0, 0, 0, 5, 'a'},           // short payload
		{'w', 0, 0, 0, 3, 1, 2, 3},       // window size of 3 bytes
		{'d', 0xff, 0xff, 0xff, 0xff, 0}, // beyond MaxData
	} {
		if _, err := NewReader(bytes.NewReader(in)).Next(); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%v: got %v, want ErrCorrupt", in, err)
		}
	}
}

// FuzzReader: any byte stream decodes to frames or an error, never a panic
// or an allocation beyond MaxData, and what decodes re-encodes the same.
func FuzzReader(f *testing.F) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.Write([]byte("echo hi\n"))
	w.Resize(Size{Rows: 24, Cols: 80})
	f.Add(buf.Bytes())
	f.Add([]byte{'w', 0, 0, 0, 4, 0, 1, 0, 2})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewReader(bytes.NewReader(in))
		var out bytes.Buffer
		w := NewWriter(&out)
		for {
			f, err := r.Next()
			if err != nil {
				break
			}
			if len(f.Data) > MaxData {
				t.Fatalf("frame of %d bytes", len(f.Data))
			}
			if f.Resize != nil {
				w.Resize(*f.Resize)
			} else {
				w.Write(f.Data)
			}
		}
		r2 := NewReader(bytes.NewReader(out.Bytes()))
		for {
			if _, err := r2.Next(); err != nil {
				if err != io.EOF {
					t.Fatalf("re-encoded stream does not decode: %v", err)
				}
				break
			}
		}
	})
}
