package efsnfs

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// enc builds XDR for seeds and tests.
type enc []byte

func (e enc) u32(v uint32) enc { return binary.BigEndian.AppendUint32(e, v) }
func (e enc) u64(v uint64) enc { return binary.BigEndian.AppendUint64(e, v) }
func (e enc) opaque(b []byte) enc {
	e = e.u32(uint32(len(b)))
	e = append(e, b...)
	for len(e)%4 != 0 {
		e = append(e, 0)
	}
	return e
}
func (e enc) fattr(typ, mode uint32, size uint64) enc {
	e = e.u32(typ).u32(mode).u32(1).u32(1001).u32(1001).u64(size).u64(size).u32(0).u32(0).u64(7).u64(42)
	for range 3 {
		e = e.u32(1700000000).u32(5)
	}
	return e
}

func readdirReply() []byte {
	e := enc{}.u32(1).fattr(2, 0o755, 4096) // dir attributes
	e = append(e, make([]byte, 8)...)       // cookie verifier
	for i, name := range []string{"a", "bb", "ccc"} {
		e = e.u32(1).u64(uint64(100 + i)).opaque([]byte(name)).u64(uint64(i + 1))
		e = e.u32(1).fattr(1, 0o644, uint64(i)).u32(1).opaque([]byte{1, 2, 3, byte(i)})
	}
	return e.u32(0).u32(1)
}

func TestDecodeReaddir(t *testing.T) {
	ents, cookie, _, eof, err := decodeReaddir(&reader{b: readdirReply()})
	if err != nil || !eof || cookie != 3 || len(ents) != 3 {
		t.Fatalf("entries %+v cookie %d eof %v err %v", ents, cookie, eof, err)
	}
	if ents[1].Name != "bb" || !ents[1].Has || ents[1].Attr.Size != 1 || ents[1].Attr.UID != 1001 || len(ents[1].FH) != 4 {
		t.Errorf("second entry %+v", ents[1])
	}
	// Cut anywhere, the reply is an error, never a panic or a bogus entry.
	b := readdirReply()
	for i := range len(b) - 1 {
		if _, _, _, _, err := decodeReaddir(&reader{b: b[:i]}); err == nil {
			t.Fatalf("reply cut at %d of %d decoded", i, len(b))
		}
	}
	// A length past the reply is refused before anything is allocated.
	if _, err := decodeMount(enc{}.u32(0).u32(1 << 31)); err == nil {
		t.Error("mount reply with a 2 GiB handle decoded")
	}
	if _, err := decodeMount(enc{}.u32(0).opaque(make([]byte, 65))); err == nil {
		t.Error("mount reply with a 65-byte handle decoded")
	}
	if _, err := decodeMount(enc{}.u32(13)); err == nil {
		t.Error("MNT3ERR_ACCES decoded as a handle")
	}
}

// FuzzDecodeReplies feeds arbitrary server replies to every decoder the
// client uses: none may panic or allocate past the reply.
func FuzzDecodeReplies(f *testing.F) {
	f.Add(readdirReply())
	f.Add([]byte(enc{}.u32(0).opaque([]byte{9, 9, 9, 9, 9, 9, 9, 9})))
	f.Add([]byte(enc{}.fattr(1, 0o600, 12)))
	f.Add([]byte(enc{}.u32(1).u64(5).u32(1).u32(2).u32(3).u32(1).fattr(1, 0o600, 1)))
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeMount(b)
		decodeReaddir(&reader{b: b})
		r := &reader{b: b}
		r.fattr()
		r = &reader{b: b}
		r.wcc()
		r.u32()
		r.postOpFH()
		r = &reader{b: b}
		r.postOpAttr()
		r.opaque(maxData)
		r.fixed(8)
		nfsStatus(binary.BigEndian.Uint32(append(b, 0, 0, 0, 0)))
	})
}

// TestWriteSeedCorpus writes the seeds above into testdata/fuzz, where
// `go test` replays them on every run (GANTRY_WRITE_CORPUS=1 to refresh).
func TestWriteSeedCorpus(t *testing.T) {
	if os.Getenv("GANTRY_WRITE_CORPUS") == "" {
		t.Skip("set GANTRY_WRITE_CORPUS=1 to rewrite testdata/fuzz/FuzzDecodeReplies")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeReplies")
	os.MkdirAll(dir, 0o755)
	seeds := [][]byte{readdirReply(), enc{}.u32(0).opaque([]byte{1, 2, 3, 4}), enc{}.u32(0).u32(1 << 30), enc{}.u32(1).fattr(5, 0o777, 3)}
	for i, s := range seeds {
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%d", i)), []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)), 0o644)
	}
}
