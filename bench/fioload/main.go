// Command fioload is the fio-style storage workload of bench/storage_test.go.
// The benchmark builds it static and runs the same binary on the host and
// inside a task, so both sides run exactly the same code.
//
// For each directory it writes a file sequentially in 1 MiB blocks, then
// overwrites random 4 KiB blocks of it, each phase ended by fsync. With
// -barrier it then creates BARRIER.written and waits for BARRIER.go, so
// the caller can drop the host's page cache and the reads that follow
// come from the disk: a sequential read in 1 MiB blocks and random 4 KiB
// reads. One JSON line per directory goes to -out (or stdout).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

type result struct {
	Dir           string  `json:"dir"`
	SeqWriteMBs   float64 `json:"seqWriteMBs"`
	SeqReadMBs    float64 `json:"seqReadMBs"`
	RandWriteIOPS float64 `json:"randWriteIOPS"`
	RandReadIOPS  float64 `json:"randReadIOPS"`
}

func main() {
	dirs := flag.String("dirs", "", "comma-separated directories to test")
	sizeMiB := flag.Int("size", 256, "file size in MiB")
	ops := flag.Int("ops", 8192, "random 4 KiB operations per phase")
	barrier := flag.String("barrier", "", "path prefix of the files that pause between writes and reads")
	out := flag.String("out", "", "where results go (default stdout)")
	flag.Parse()
	if err := run(strings.Split(*dirs, ","), int64(*sizeMiB)<<20, *ops, *barrier, *out); err != nil {
		fmt.Fprintln(os.Stderr, "fioload:", err)
		os.Exit(1)
	}
}

func run(dirs []string, size int64, ops int, barrier, out string) error {
	res := make([]result, len(dirs))
	for i, d := range dirs {
		res[i].Dir = d
		f, err := os.OpenFile(filepath.Join(d, "fioload.dat"), os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o644)
		if err != nil {
			return err
		}
		if res[i].SeqWriteMBs, err = seqWrite(f, size); err != nil {
			return err
		}
		if res[i].RandWriteIOPS, err = random(f, size, ops, true); err != nil {
			return err
		}
		f.Close()
	}
	if barrier != "" {
		if err := os.WriteFile(barrier+".written", nil, 0o644); err != nil {
			return err
		}
		for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
			if _, err := os.Stat(barrier + ".go"); err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("no %s.go", barrier)
			}
		}
	}
	for i, d := range dirs {
		name := filepath.Join(d, "fioload.dat")
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		// The caller dropped the host's caches; this drops what a layer of
		// our own (the FUSE or overlay mount) may still hold of the file.
		unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		if res[i].SeqReadMBs, err = seqRead(f, size); err != nil {
			return err
		}
		unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		if res[i].RandReadIOPS, err = random(f, size, ops, false); err != nil {
			return err
		}
		f.Close()
		os.Remove(name)
	}
	w := io.Writer(os.Stdout)
	if out != "" {
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	enc := json.NewEncoder(w)
	for _, r := range res {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

func seqWrite(f *os.File, size int64) (float64, error) {
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	t0 := time.Now()
	for off := int64(0); off < size; off += int64(len(buf)) {
		if _, err := f.Write(buf); err != nil {
			return 0, err
		}
	}
	if err := f.Sync(); err != nil {
		return 0, err
	}
	return float64(size) / 1e6 / time.Since(t0).Seconds(), nil
}

func seqRead(f *os.File, size int64) (float64, error) {
	buf := make([]byte, 1<<20)
	t0 := time.Now()
	var n int64
	for {
		k, err := f.Read(buf)
		n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	if n != size {
		return 0, fmt.Errorf("read %d bytes of %d", n, size)
	}
	return float64(size) / 1e6 / time.Since(t0).Seconds(), nil
}

// random does ops 4 KiB preads or pwrites at random aligned offsets (the
// same sequence each run), writes ended by fsync; it returns operations
// per second.
func random(f *os.File, size int64, ops int, write bool) (float64, error) {
	buf := make([]byte, 4096)
	rng := rand.New(rand.NewPCG(1, 2))
	blocks := size / 4096
	t0 := time.Now()
	for range ops {
		off := rng.Int64N(blocks) * 4096
		var err error
		if write {
			_, err = f.WriteAt(buf, off)
		} else {
			_, err = f.ReadAt(buf, off)
		}
		if err != nil {
			return 0, err
		}
	}
	if write {
		if err := f.Sync(); err != nil {
			return 0, err
		}
	}
	return float64(ops) / time.Since(t0).Seconds(), nil
}
