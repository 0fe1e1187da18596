// Package maptest checks, for the tests of Gantry's FUSE file systems,
// that a file opened O_APPEND can be mapped shared and written through
// the map in place, as on a local file system (efsfuse.PageWrites).
package maptest

import (
	"os"
	"os/exec"
	"testing"
)

// The mapping is done by python3, not by the test: a goroutine faulting
// on a page the test's own process serves would hold up the garbage
// collector's stop-the-world, and with it the goroutines that would
// answer the fault.
const script = `import mmap, sys
f = open(sys.argv[1], 'a+b')
f.write(b'hello world\n')
f.flush()
m = mmap.mmap(f.fileno(), 12)
assert m[:] == b'hello world\n', m[:]
m[0:1] = b'H'
m.flush()
m.close()
f.write(b'more\n')
f.close()
`

// AppendFile writes, maps, changes and appends to mounted (a new file on
// the mount), then checks what backing (the same file in the served
// tree) holds.
func AppendFile(t testing.TB, mounted, backing string) {
	t.Helper()
	if out, err := exec.Command("python3", "-c", script, mounted).CombinedOutput(); err != nil {
		t.Fatalf("mapping a file opened O_APPEND: %v: %s", err, out)
	}
	if b, _ := os.ReadFile(backing); string(b) != "Hello world\nmore\n" {
		t.Errorf("after writing through the map and appending: %q", b)
	}
}
