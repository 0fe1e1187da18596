package testimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// PythonRef is the name of the image Python builds.
const PythonRef = "gantry-test/python:latest"

// pythonProbe runs in the host's python3 and prints what an image needs to
// run it with boto3 and the aws CLI v1: the interpreter, its standard
// library, and every file of awscli's and boto3's distributions and of
// what they require, transitively. Copying installed distributions whole
// (by their RECORD) rather than guessing module names keeps lazily
// imported modules (CLI customisations, botocore's data) in.
const pythonProbe = `
import json, os, re, sys, sysconfig
from importlib import metadata
out = {"exe": os.path.realpath(sys.executable), "stdlib": sysconfig.get_path("stdlib"),
       "platstdlib": sysconfig.get_path("platstdlib"), "files": [], "scripts": []}
seen, todo = set(), ["awscli", "boto3"]
while todo:
    name = todo.pop()
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in seen:
        continue
    seen.add(key)
    try:
        d = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        continue
    if d.files is not None:
        out["files"] += [os.path.abspath(str(d.locate_file(f))) for f in d.files]
    else:
        # Distributions without a RECORD (Debian's) name their modules in top_level.txt.
        base = str(d.locate_file(""))
        for top in (d.read_text("top_level.txt") or "").split():
            for cand in (top, top + ".py"):
                if os.path.exists(os.path.join(base, cand)):
                    out["files"].append(os.path.join(base, cand))
        if key == "awscli":
            out["scripts"] += [p for p in ("/usr/bin/aws",) if os.path.exists(p)]
    for req in d.requires or []:
        if "extra ==" not in req:
            todo.append(re.match(r"[A-Za-z0-9._-]+", req).group(0))
print(json.dumps(out))
`

// Python returns a docker-save tarball of PythonRef: busybox (for sh)
// plus the host's python3 with boto3 and the aws CLI v1, so tasks can run
// the real clients without a registry. The files keep their host paths
// (the interpreter finds its library, and libpython through its RUNPATH,
// where they were built to be); the shared libraries ldd names come along.
// python3 and aws are in /usr/local/bin.
//
// The image is some 55 MiB (150 unpacked), so it is kept across test runs in the
// test-image directory under a name derived from the files it holds, and
// rebuilt only when the host's Python installation changes.
func Python(t testing.TB) string {
	t.Helper()
	cacheMu.Lock()
	defer cacheMu.Unlock()
	if p, ok := cached["python"]; ok {
		return p
	}
	files, scripts, exe, err := pythonFiles()
	if err != nil {
		t.Fatalf("python test image: %v", err)
	}
	h := sha256.New()
	for _, f := range append(append([]string{exe}, scripts...), files...) {
		if fi, err := os.Lstat(f); err == nil {
			fmt.Fprintf(h, "%s %d %d\n", f, fi.Size(), fi.ModTime().UnixNano())
		}
	}
	dir := filepath.Join(os.TempDir(), "gantry-testimage")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "python-"+hex.EncodeToString(h.Sum(nil))[:16]+".tar")
	if _, err := os.Stat(p); err != nil {
		start := time.Now()
		tmp := fmt.Sprintf("%s.%d.tmp", p, os.Getpid())
		if err := writePython(tmp, files, scripts, exe); err != nil {
			os.Remove(tmp)
			t.Fatalf("python test image: %v", err)
		}
		if err := os.Rename(tmp, p); err != nil {
			t.Fatal(err)
		}
		// Older builds (another Python on the host before) are only disk.
		old, _ := filepath.Glob(filepath.Join(dir, "python-*.tar"))
		for _, o := range old {
			if o != p {
				os.Remove(o)
			}
		}
		if fi, err := os.Stat(p); err == nil {
			t.Logf("built %s: %d MiB in %v", PythonRef, fi.Size()>>20, time.Since(start).Round(time.Millisecond))
		}
	}
	cached["python"] = p
	return p
}

// pythonFiles lists what the image holds: files and directories (walked
// later), the scripts to link from /usr/local/bin, and the interpreter.
func pythonFiles() (files, scripts []string, exe string, err error) {
	out, err := exec.Command("python3", "-c", pythonProbe).Output()
	if err != nil {
		return nil, nil, "", fmt.Errorf("python3 (with boto3 and awscli installed): %w", err)
	}
	var probe struct {
		Exe, Stdlib, Platstdlib string
		Files, Scripts          []string
	}
	if err := json.Unmarshal(out, &probe); err != nil {
		return nil, nil, "", fmt.Errorf("python3 probe: %w: %s", err, out)
	}
	files = append(files, probe.Files...)
	for _, lib := range []string{probe.Stdlib, probe.Platstdlib} {
		if err := filepath.WalkDir(lib, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				if p != lib && skipStdlibDir[d.Name()] && filepath.Dir(p) == lib || strings.HasPrefix(d.Name(), "config-") {
					return filepath.SkipDir
				}
				return nil
			}
			if !skipStdlibFile.MatchString(d.Name()) {
				files = append(files, p)
			}
			return nil
		}); err != nil {
			return nil, nil, "", err
		}
	}
	for _, f := range probe.Files {
		if filepath.Base(f) == "aws" && strings.Contains(f, "/bin/") {
			scripts = append(scripts, f)
		}
	}
	scripts = append(scripts, probe.Scripts...)
	if len(scripts) == 0 {
		return nil, nil, "", fmt.Errorf("no aws script among awscli's files: is the aws CLI v1 installed for python3?")
	}
	sort.Strings(files)
	return files, scripts, probe.Exe, nil
}

// Parts of the standard library no client needs: tests, GUIs, installers,
// and packages installed beside it (only the clients' are copied).
var skipStdlibDir = map[string]bool{
	"site-packages": true, "dist-packages": true, "test": true, "idlelib": true, "tkinter": true,
	"turtledemo": true, "ensurepip": true, "lib2to3": true, "pydoc_data": true, "__phello__": true,
}

var skipStdlibFile = regexp.MustCompile(`\.opt-[12]\.pyc$|^_test|^_tkinter|^xxlimited|^_ctypes_test|^_xxtestfuzz`)

func writePython(path string, files, scripts []string, exe string) error {
	tag, img, err := build(PythonRef, []Option{
		WithCmd("python3"),
		// Nothing may be written next to the copied modules: the image's
		// files stay as built.
		WithEnv("PYTHONDONTWRITEBYTECODE=1"),
	})
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	l := &layerWriter{tw: tw, dirs: map[string]bool{}}
	// The interpreter and the names it goes by in its directory (python,
	// python3: scripts' shebangs use them).
	if err := l.add(exe); err != nil {
		return err
	}
	if ents, err := os.ReadDir(filepath.Dir(exe)); err == nil {
		for _, e := range ents {
			p := filepath.Join(filepath.Dir(exe), e.Name())
			if r, err := filepath.EvalSymlinks(p); err == nil && r == exe && p != exe {
				if err := l.add(p); err != nil {
					return err
				}
			}
		}
	}
	elf := []string{exe}
	for _, f := range append(files, scripts...) {
		fi, err := os.Lstat(f)
		if err != nil {
			continue // a RECORD may list a file since removed (pycs)
		}
		if fi.IsDir() {
			if err := filepath.WalkDir(f, func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				if strings.HasSuffix(p, ".so") {
					elf = append(elf, p)
				}
				return l.add(p)
			}); err != nil {
				return err
			}
			continue
		}
		if strings.HasSuffix(f, ".so") {
			elf = append(elf, f)
		}
		if err := l.add(f); err != nil {
			return err
		}
	}
	libs, err := sharedLibraries(elf)
	if err != nil {
		return err
	}
	for _, lib := range libs {
		if err := l.addResolved(lib); err != nil {
			return err
		}
	}
	if err := l.symlink("usr/local/bin/python3", exe); err != nil {
		return err
	}
	if err := l.symlink("usr/local/bin/aws", scripts[0]); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressionLevel(gzip.BestSpeed))
	if err != nil {
		return err
	}
	if img, err = mutate.AppendLayers(img, layer); err != nil {
		return err
	}
	return tarball.WriteToFile(path, tag, img)
}

// sharedLibraries are the libraries ldd says the ELF files load,
// including the dynamic loader, by the paths the loader will look for.
func sharedLibraries(elf []string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	re := regexp.MustCompile(`(?m)(?:=>\s*)?(/\S+)\s+\(0x`)
	for _, f := range elf {
		b, err := exec.Command("ldd", f).Output()
		if err != nil {
			continue // not dynamic (or not ELF): nothing to add
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			if !seen[m[1]] {
				seen[m[1]] = true
				out = append(out, m[1])
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("ldd found no libraries for %s", elf[0])
	}
	return out, nil
}

// layerWriter writes host files into a layer at their own paths, with
// their parent directories.
type layerWriter struct {
	tw   *tar.Writer
	dirs map[string]bool
}

var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

func (l *layerWriter) parents(name string) error {
	var todo []string
	for d := filepath.Dir(name); d != "." && d != "/" && !l.dirs[d]; d = filepath.Dir(d) {
		todo = append(todo, d)
	}
	for i := len(todo) - 1; i >= 0; i-- {
		l.dirs[todo[i]] = true
		if err := l.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: todo[i] + "/", Mode: 0o755, ModTime: epoch}); err != nil {
			return err
		}
	}
	return nil
}

// add copies host path p (a file or a symlink, as it is).
func (l *layerWriter) add(p string) error {
	fi, err := os.Lstat(p)
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		return l.symlink(strings.TrimPrefix(p, "/"), target)
	}
	return l.file(strings.TrimPrefix(p, "/"), p)
}

// addResolved copies what host path p leads to, at p: a library named by
// ldd through a symlinked directory (/lib on a merged-/usr system) lands
// where the loader looks.
func (l *layerWriter) addResolved(p string) error {
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return err
	}
	return l.file(strings.TrimPrefix(p, "/"), real)
}

func (l *layerWriter) file(name, src string) error {
	name = filepath.Clean(name)
	if l.dirs["file:"+name] {
		return nil
	}
	l.dirs["file:"+name] = true
	fi, err := os.Stat(src)
	if err != nil || !fi.Mode().IsRegular() {
		return err
	}
	if err := l.parents(name); err != nil {
		return err
	}
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := l.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(fi.Mode().Perm()), Size: fi.Size(), ModTime: epoch}); err != nil {
		return err
	}
	_, err = io.Copy(l.tw, f)
	return err
}

func (l *layerWriter) symlink(name, target string) error {
	name = filepath.Clean(name)
	if l.dirs["file:"+name] {
		return nil
	}
	l.dirs["file:"+name] = true
	if err := l.parents(name); err != nil {
		return err
	}
	return l.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: epoch})
}
