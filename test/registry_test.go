package test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"

	"github.com/gantry-dev/gantry/internal/testenv"
	"github.com/gantry-dev/gantry/internal/testimage"
)

// registryServer is a test server with its registry on a free port.
type registryServer struct {
	*testenv.Server
	Host string // the registry's HOST:PORT
}

func startRegistry(t *testing.T) *registryServer {
	t.Helper()
	if _, err := exec.LookPath("skopeo"); err != nil {
		t.Fatal("skopeo is needed (apt-get install skopeo; scripts/test.sh installs it)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := ln.Addr().String()
	ln.Close()
	return &registryServer{Server: testenv.Start(t, "--registry-listen", host), Host: host}
}

func (s *registryServer) password(t *testing.T) string {
	t.Helper()
	out, stderr, code := s.AWS("ecr", "get-login-password")
	if code != 0 {
		t.Fatalf("get-login-password: %s", stderr)
	}
	var pw string
	if err := json.Unmarshal([]byte(out), &pw); err != nil {
		pw = strings.TrimSpace(out)
	}
	return pw
}

func (s *registryServer) createRepo(t *testing.T, name string, args ...string) {
	t.Helper()
	s.MustAWS(nil, append([]string{"ecr", "create-repository", "--repository-name", name}, args...)...)
}

// skopeo runs skopeo and returns its combined output and whether it succeeded.
func skopeo(t *testing.T, args ...string) (string, bool) {
	t.Helper()
	cmd := exec.Command("skopeo", append([]string{"--insecure-policy"}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	return string(out), err == nil
}

func (s *registryServer) push(t *testing.T, tarball, repoTag, password string) {
	t.Helper()
	if out, ok := skopeo(t, "copy", "docker-archive:"+tarball, "docker://"+s.Host+"/"+repoTag, "--dest-creds", "AWS:"+password, "--dest-tls-verify=false"); !ok {
		t.Fatalf("skopeo push %s: %s", repoTag, out)
	}
}

func (s *registryServer) ref(t *testing.T, r string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s.Host+"/"+r, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func auth(pw string) remote.Option {
	return remote.WithAuth(&authn.Basic{Username: "AWS", Password: pw})
}

// request sends a raw registry API request with the token.
func (s *registryServer) request(t *testing.T, method, path, pw string, body []byte, header ...string) *http.Response {
	t.Helper()
	u := path
	if !strings.HasPrefix(u, "http") {
		u = "http://" + s.Host + path
	}
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if pw != "" {
		req.SetBasicAuth("AWS", pw)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func regErrorCode(t *testing.T, resp *http.Response) string {
	t.Helper()
	var e struct {
		Errors []struct{ Code, Message string }
	}
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &e); err != nil || len(e.Errors) == 0 {
		t.Fatalf("%s %s: not a registry error body: %q", resp.Request.Method, resp.Request.URL.Path, b)
	}
	return e.Errors[0].Code
}

func blobFiles(t *testing.T, s *registryServer) int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(s.DataDir, "registry", "blobs", "sha256", "*"))
	if err != nil {
		t.Fatal(err)
	}
	return len(files)
}

// TestRegistryPushPull pushes with skopeo and go-containerregistry (crane's
// library), pulls back, mounts across repositories, pushes an OCI index,
// and checks that a restart keeps everything.
func TestRegistryPushPull(t *testing.T) {
	s := startRegistry(t)
	s.createRepo(t, "team/app")
	s.createRepo(t, "other")
	pw := s.password(t)

	// Without a token nothing is served.
	resp := s.request(t, "GET", "/v2/", "", nil)
	if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") || regErrorCode(t, resp) != "UNAUTHORIZED" {
		t.Fatalf("anonymous /v2/: %d %v", resp.StatusCode, resp.Header)
	}
	if resp := s.request(t, "GET", "/v2/", "not-a-token", nil); resp.StatusCode != 401 {
		t.Fatalf("bad token: %d", resp.StatusCode)
	}
	busybox := testimage.Busybox(t)
	if out, ok := skopeo(t, "copy", "docker-archive:"+busybox, "docker://"+s.Host+"/team/app:v1", "--dest-tls-verify=false"); ok {
		t.Fatalf("anonymous push succeeded: %s", out)
	}
	if out, ok := skopeo(t, "copy", "docker-archive:"+busybox, "docker://"+s.Host+"/nosuch:v1", "--dest-creds", "AWS:"+pw, "--dest-tls-verify=false"); ok || !strings.Contains(out, "does not exist") {
		t.Fatalf("push to a missing repository: ok=%v %s", ok, out)
	}

	s.push(t, busybox, "team/app:v1", pw)
	img, err := remote.Image(s.ref(t, "team/app:v1"), auth(pw))
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil { // reads every blob and checks its digest
		t.Fatalf("pulled image: %v", err)
	}
	if _, err := remote.Image(s.ref(t, "team/app:v1")); err == nil {
		t.Fatal("anonymous pull succeeded")
	}
	digest, _ := img.Digest()
	blobs := blobFiles(t, s)

	// A layer pulled from team/app and pushed to other is mounted, not
	// uploaded again, and the disk keeps one copy.
	if err := remote.Write(s.ref(t, "other:copy"), img, auth(pw)); err != nil {
		t.Fatal(err)
	}
	if n := blobFiles(t, s); n != blobs {
		t.Fatalf("blobs on disk went from %d to %d after a cross-repository copy", blobs, n)
	}
	copied, err := remote.Head(s.ref(t, "other:copy"), auth(pw))
	if err != nil || copied.Digest != digest {
		t.Fatalf("other:copy is %v (%v), want %s", copied, err, digest)
	}

	// An OCI index of two images, pushed with its children.
	a, _ := mutate.ConfigFile(mutate.MediaType(empty.Image, types.OCIManifestSchema1), &v1.ConfigFile{Architecture: "amd64", OS: "linux"})
	b, _ := mutate.ConfigFile(mutate.MediaType(empty.Image, types.OCIManifestSchema1), &v1.ConfigFile{Architecture: "arm64", OS: "linux"})
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: a, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: b, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	if err := remote.WriteIndex(s.ref(t, "team/app:multi"), idx, auth(pw)); err != nil {
		t.Fatal(err)
	}
	idxDigest, _ := idx.Digest()
	desc, err := remote.Get(s.ref(t, "team/app:multi"), auth(pw))
	if err != nil || desc.MediaType != types.OCIImageIndex || desc.Digest != idxDigest {
		t.Fatalf("index: %+v %v", desc, err)
	}
	// A manifest naming a blob the repository does not have is refused.
	bogus := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,"digest":"sha256:%064x"},"layers":[]}`, 1)
	if resp := s.request(t, "PUT", "/v2/team/app/manifests/bogus", pw, []byte(bogus), "Content-Type", "application/vnd.oci.image.manifest.v1+json"); resp.StatusCode != 400 || regErrorCode(t, resp) != "MANIFEST_BLOB_UNKNOWN" {
		t.Fatalf("manifest with a missing blob: %d", resp.StatusCode)
	}

	s.Restart()
	pw = s.password(t)
	for _, r := range []string{"team/app:v1", "other:copy", "team/app@" + digest.String()} {
		img, err := remote.Image(s.ref(t, r), auth(pw))
		if err != nil {
			t.Fatalf("after restart, %s: %v", r, err)
		}
		if err := validate.Image(img); err != nil {
			t.Fatalf("after restart, %s: %v", r, err)
		}
	}
	if out, ok := skopeo(t, "inspect", "--creds", "AWS:"+pw, "--tls-verify=false", "docker://"+s.Host+"/team/app:v1"); !ok || !strings.Contains(out, digest.String()) {
		t.Fatalf("skopeo inspect after restart: %s", out)
	}
	resp = s.request(t, "GET", "/v2/team/app/tags/list", pw, nil)
	var tags struct{ Tags []string }
	json.NewDecoder(resp.Body).Decode(&tags)
	if strings.Join(tags.Tags, ",") != "multi,v1" {
		t.Fatalf("tags: %v", tags.Tags)
	}
}

// TestRegistryUploads drives chunked uploads by hand: out-of-order chunks,
// a wrong digest and an abandoned upload leave no blob behind.
func TestRegistryUploads(t *testing.T) {
	s := startRegistry(t)
	s.createRepo(t, "chunks")
	pw := s.password(t)
	content := bytes.Repeat([]byte("gantry registry chunk "), 1000)
	sum := sha256.Sum256(content)
	digest := "sha256:" + hex.EncodeToString(sum[:])

	start := func() string {
		resp := s.request(t, "POST", "/v2/chunks/blobs/uploads/", pw, nil)
		if resp.StatusCode != 202 || resp.Header.Get("Location") == "" {
			t.Fatalf("start upload: %d", resp.StatusCode)
		}
		return resp.Header.Get("Location")
	}
	loc := start()
	resp := s.request(t, "PATCH", loc, pw, content[:100], "Content-Range", "0-99", "Content-Type", "application/octet-stream")
	if resp.StatusCode != 202 || resp.Header.Get("Range") != "0-99" {
		t.Fatalf("first chunk: %d %q", resp.StatusCode, resp.Header.Get("Range"))
	}
	loc = resp.Header.Get("Location")
	if resp := s.request(t, "PATCH", loc, pw, content[200:300], "Content-Range", "200-299"); resp.StatusCode != 416 || regErrorCode(t, resp) != "BLOB_UPLOAD_INVALID" {
		t.Fatalf("out-of-order chunk: %d", resp.StatusCode)
	}
	// Abandoned halfway: nothing is visible under the digest.
	if resp := s.request(t, "HEAD", "/v2/chunks/blobs/"+digest, pw, nil); resp.StatusCode != 404 {
		t.Fatalf("half-uploaded blob is visible: %d", resp.StatusCode)
	}
	if n := blobFiles(t, s); n != 0 {
		t.Fatalf("%d blob files after an unfinished upload", n)
	}
	resp = s.request(t, "PATCH", loc, pw, content[100:], "Content-Range", fmt.Sprintf("100-%d", len(content)-1))
	if resp.StatusCode != 202 {
		t.Fatalf("second chunk: %d", resp.StatusCode)
	}
	loc = resp.Header.Get("Location")
	wrong := "sha256:" + strings.Repeat("0", 64)
	if resp := s.request(t, "PUT", loc+"?digest="+wrong, pw, nil); resp.StatusCode != 400 || regErrorCode(t, resp) != "DIGEST_INVALID" {
		t.Fatalf("finish with a wrong digest: %d", resp.StatusCode)
	}
	if n := blobFiles(t, s); n != 0 {
		t.Fatalf("%d blob files after a digest mismatch", n)
	}

	// Again, right this time, with the last chunk in the PUT.
	loc = start()
	loc = s.request(t, "PATCH", loc, pw, content[:500]).Header.Get("Location")
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	if resp := s.request(t, "PUT", loc+sep+"digest="+digest, pw, content[500:]); resp.StatusCode != 201 || resp.Header.Get("Docker-Content-Digest") != digest {
		t.Fatalf("finish: %d", resp.StatusCode)
	}
	resp = s.request(t, "GET", "/v2/chunks/blobs/"+digest, pw, nil)
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !bytes.Equal(got, content) {
		t.Fatalf("blob read back: %d, %d bytes", resp.StatusCode, len(got))
	}
	resp = s.request(t, "GET", "/v2/chunks/blobs/"+digest, pw, nil, "Range", "bytes=10-19")
	got, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != 206 || !bytes.Equal(got, content[10:20]) {
		t.Fatalf("range read: %d %q", resp.StatusCode, got)
	}
	// Monolithic upload of the same content is deduplicated.
	if resp := s.request(t, "POST", "/v2/chunks/blobs/uploads/?digest="+digest, pw, content); resp.StatusCode != 201 {
		t.Fatalf("monolithic upload: %d", resp.StatusCode)
	}
	if n := blobFiles(t, s); n != 1 {
		t.Fatalf("%d blob files, want 1", n)
	}
	if resp := s.request(t, "GET", "/v2/chunks/blobs/not-a-digest", pw, nil); resp.StatusCode != 400 || regErrorCode(t, resp) != "DIGEST_INVALID" {
		t.Fatalf("bad digest: %d", resp.StatusCode)
	}
	if resp := s.request(t, "GET", "/v2/chunks/manifests/nosuch", pw, nil); resp.StatusCode != 404 || regErrorCode(t, resp) != "MANIFEST_UNKNOWN" {
		t.Fatalf("missing manifest: %d", resp.StatusCode)
	}
}
