package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/gantry-dev/gantry/internal/state"
)

// MaxManifestSize is ECR's limit on a manifest's size.
const MaxManifestSize = 4 << 20

// Registry serves the OCI distribution API for one account and region's
// repositories. Repositories are made with the ECR API, as on AWS: pushing
// to one that does not exist is refused.
type Registry struct {
	Store   state.Store
	Account string
	Region  string
	Tokens  *Tokens
	Log     *slog.Logger
	Now     func() time.Time
	// AfterPush, if set, runs after an image was pushed (lifecycle policies).
	AfterPush func(repo string)
	// GCGrace is how long an unreferenced blob is kept after a push last
	// wrote or checked it; 0: GANTRY_REGISTRY_GC_GRACE (a Go duration, for
	// tests) or DefaultGCGrace.
	GCGrace time.Duration

	blobs blobStore
	gc    gc
}

// Open prepares the blob directories under dir (DATA_DIR/registry).
func Open(dir string, r *Registry) (*Registry, error) {
	r.blobs = blobStore{dir: dir}
	if r.Now == nil {
		r.Now = time.Now
	}
	if r.Log == nil {
		r.Log = slog.Default()
	}
	if v := os.Getenv("GANTRY_REGISTRY_GC_GRACE"); r.GCGrace == 0 && v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("GANTRY_REGISTRY_GC_GRACE=%q: want a positive Go duration such as 10m", v)
		}
		r.GCGrace = d
	}
	return r, r.blobs.init()
}

// regError is the distribution spec's error body.
type regError struct {
	Status  int
	Code    string
	Message string
}

func (e *regError) Error() string { return e.Code + ": " + e.Message }

func errorf(status int, code, format string, args ...any) *regError {
	return &regError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func (r *Registry) writeError(w http.ResponseWriter, req *http.Request, err error) {
	var re *regError
	if !errors.As(err, &re) {
		r.Log.Error("registry request failed", "method", req.Method, "path", req.URL.Path, "err", err)
		re = errorf(http.StatusInternalServerError, "UNKNOWN", "%v", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(re.Status)
	json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": re.Code, "message": re.Message}}})
}

func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	defer func() {
		if p := recover(); p != nil {
			r.writeError(w, req, fmt.Errorf("internal error: %v", p))
		}
	}()
	if err := r.serve(w, req); err != nil {
		r.writeError(w, req, err)
	}
}

func (r *Registry) serve(w http.ResponseWriter, req *http.Request) error {
	p := req.URL.Path
	if p != "/v2" && !strings.HasPrefix(p, "/v2/") {
		return errorf(http.StatusNotFound, "NOT_FOUND", "not a registry API path: %s", p)
	}
	if err := r.authorize(w, req); err != nil {
		return err
	}
	rest := strings.TrimPrefix(strings.TrimPrefix(p, "/v2"), "/")
	switch {
	case rest == "":
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte("{}"))
		return nil
	case rest == "_catalog":
		return r.catalog(w, req)
	case strings.HasSuffix(rest, "/tags/list"):
		return r.tags(w, req, strings.TrimSuffix(rest, "/tags/list"))
	}
	if strings.HasSuffix(rest, "/blobs/uploads") {
		rest += "/"
	}
	if i := strings.LastIndex(rest, "/blobs/uploads/"); i > 0 {
		return r.upload(w, req, rest[:i], rest[i+len("/blobs/uploads/"):])
	}
	if i := strings.LastIndex(rest, "/blobs/"); i > 0 {
		return r.blob(w, req, rest[:i], rest[i+len("/blobs/"):])
	}
	if i := strings.LastIndex(rest, "/manifests/"); i > 0 {
		return r.manifest(w, req, rest[:i], rest[i+len("/manifests/"):])
	}
	return errorf(http.StatusNotFound, "NOT_FOUND", "not a registry API path: %s", p)
}

// authorize accepts Basic auth as user AWS with a token from
// GetAuthorizationToken, which is what docker login, skopeo, crane and
// containerd send after the Basic challenge.
func (r *Registry) authorize(w http.ResponseWriter, req *http.Request) error {
	user, pass, ok := req.BasicAuth()
	var why error
	switch {
	case !ok:
		why = errors.New("authentication required; log in with the password from aws ecr get-login-password and user AWS")
	case user != "AWS":
		why = fmt.Errorf("user %q is not allowed; the user name is AWS", user)
	default:
		if err := r.Tokens.Check(pass, r.Now()); err != nil {
			why = err
		}
	}
	if why == nil {
		return nil
	}
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Basic realm=%q,service="ecr.amazonaws.com"`, "http://"+req.Host+"/"))
	return errorf(http.StatusUnauthorized, "UNAUTHORIZED", "%v", why)
}

// repo returns the key of an existing repository.
func (r *Registry) repo(tx state.Tx, name string) (string, error) {
	if !ValidRepositoryName(name) {
		return "", errorf(http.StatusBadRequest, "NAME_INVALID", "invalid repository name %q", name)
	}
	key := RepoKey(r.Account, r.Region, name)
	var repo Repository
	ok, err := tx.Get(KindRepository, key, &repo)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", errorf(http.StatusNotFound, "NAME_UNKNOWN", "The repository with name '%s' does not exist in the registry with id '%s'; create it with aws ecr create-repository", name, r.Account)
	}
	return key, nil
}

func (r *Registry) repoKey(ctx context.Context, name string) (string, error) {
	var key string
	err := r.Store.View(ctx, func(tx state.Tx) (err error) { key, err = r.repo(tx, name); return })
	return key, err
}

func parseDigest(s string) (v1.Hash, error) {
	h, err := v1.NewHash(s)
	if err != nil || h.Algorithm != "sha256" {
		return v1.Hash{}, errorf(http.StatusBadRequest, "DIGEST_INVALID", "invalid digest %q: only sha256 digests are supported", s)
	}
	return h, nil
}

// link records that repository key may read blob h.
func (r *Registry) link(ctx context.Context, key string, h v1.Hash, size int64) error {
	return r.Store.Update(ctx, func(tx state.Tx) error {
		var repo Repository
		if ok, err := tx.Get(KindRepository, key, &repo); err != nil || !ok {
			if err == nil {
				err = errorf(http.StatusNotFound, "NAME_UNKNOWN", "repository was deleted during the upload")
			}
			return err
		}
		return tx.Put(KindBlob, BlobPrefix(key)+h.String(), blobLink{Size: size, Touched: r.Now().UTC()})
	})
}

// touch tells the collector a push just learnt that the repository has the
// blob and may name it in a manifest soon, and reports whether it has. The
// stamp is refreshed at most every quarter of the grace period, so pushes
// of unchanged layers do not write on every check.
func (r *Registry) touch(ctx context.Context, key string, h v1.Hash) (bool, error) {
	var ok bool
	err := r.Store.Update(ctx, func(tx state.Tx) error {
		var l blobLink
		var err error
		if ok, err = tx.Get(KindBlob, BlobPrefix(key)+h.String(), &l); err != nil || !ok {
			return err
		}
		if r.Now().Sub(l.Touched) < r.grace()/4 {
			return nil
		}
		l.Touched = r.Now().UTC()
		return tx.Put(KindBlob, BlobPrefix(key)+h.String(), l)
	})
	return ok, err
}

func (r *Registry) linked(ctx context.Context, key string, h v1.Hash) (bool, error) {
	var ok bool
	err := r.Store.View(ctx, func(tx state.Tx) (err error) {
		ok, err = tx.Get(KindBlob, BlobPrefix(key)+h.String(), &blobLink{})
		return
	})
	return ok, err
}

func (r *Registry) blob(w http.ResponseWriter, req *http.Request, name, digest string) error {
	key, err := r.repoKey(req.Context(), name)
	if err != nil {
		return err
	}
	h, err := parseDigest(digest)
	if err != nil {
		return err
	}
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return errorf(http.StatusMethodNotAllowed, "UNSUPPORTED", "%s is not supported on blobs; delete images with aws ecr batch-delete-image", req.Method)
	}
	var ok bool
	if req.Method == http.MethodHead {
		ok, err = r.touch(req.Context(), key, h)
	} else {
		ok, err = r.linked(req.Context(), key, h)
	}
	if err != nil {
		return err
	}
	var f *os.File
	if ok {
		f, err = r.blobs.open(h)
	}
	if !ok || errors.Is(err, os.ErrNotExist) {
		return errorf(http.StatusNotFound, "BLOB_UNKNOWN", "blob %s is not in repository %s", h, name)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Docker-Content-Digest", h.String())
	w.Header().Set("Etag", `"`+h.String()+`"`)
	if req.Method == http.MethodHead {
		http.ServeContent(w, req, "", time.Time{}, f)
		return nil
	}
	start := time.Now()
	cw := &countingWriter{ResponseWriter: w}
	http.ServeContent(cw, req, "", time.Time{}, f)
	// The access log of blob downloads: how operators (and the tests) see
	// that each layer crossed the wire once per host.
	r.Log.Info("registry blob sent", "repository", name, "digest", h.String(), "bytes", cw.n, "range", req.Header.Get("Range") != "", "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

// ReadFrom keeps the response's sendfile path for blob bodies.
func (c *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	n, err := io.Copy(c.ResponseWriter, r)
	c.n += n
	return n, err
}

func (r *Registry) upload(w http.ResponseWriter, req *http.Request, name, id string) error {
	key, err := r.repoKey(req.Context(), name)
	if err != nil {
		return err
	}
	if id == "" {
		if req.Method != http.MethodPost {
			return errorf(http.StatusMethodNotAllowed, "UNSUPPORTED", "start an upload with POST")
		}
		return r.startUpload(w, req, name, key)
	}
	if !validUploadID(id) {
		return errorf(http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN", "unknown upload %q", id)
	}
	file := r.blobs.uploadPath(id)
	fi, err := os.Stat(file)
	if errors.Is(err, os.ErrNotExist) {
		return errorf(http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN", "unknown upload %q (uploads do not survive a server restart; start again)", id)
	}
	if err != nil {
		return err
	}
	location := "/v2/" + name + "/blobs/uploads/" + id
	switch req.Method {
	case http.MethodGet:
		uploadHeaders(w, location, id, fi.Size())
		w.WriteHeader(http.StatusNoContent)
		return nil
	case http.MethodDelete:
		os.Remove(file)
		w.WriteHeader(http.StatusNoContent)
		return nil
	case http.MethodPatch:
		if cr := req.Header.Get("Content-Range"); cr != "" {
			start, _, _ := strings.Cut(cr, "-")
			if n, err := strconv.ParseInt(start, 10, 64); err != nil || n != fi.Size() {
				uploadHeaders(w, location, id, fi.Size())
				return errorf(http.StatusRequestedRangeNotSatisfiable, "BLOB_UPLOAD_INVALID", "chunk starts at %s, the upload has %d bytes", start, fi.Size())
			}
		}
		size, err := appendTo(file, req.Body)
		if err != nil {
			return err
		}
		uploadHeaders(w, location, id, size)
		w.WriteHeader(http.StatusAccepted)
		return nil
	case http.MethodPut:
		h, err := parseDigest(req.URL.Query().Get("digest"))
		if err != nil {
			return err
		}
		if _, err := appendTo(file, req.Body); err != nil {
			return err
		}
		r.gc.mu.RLock()
		defer r.gc.mu.RUnlock()
		size, err := r.blobs.commit(file, h)
		if err != nil {
			return uploadError(err)
		}
		return r.created(req.Context(), w, key, name, h, size)
	}
	return errorf(http.StatusMethodNotAllowed, "UNSUPPORTED", "%s is not supported on uploads", req.Method)
}

func (r *Registry) startUpload(w http.ResponseWriter, req *http.Request, name, key string) error {
	q := req.URL.Query()
	if m := q.Get("mount"); m != "" {
		if done, err := r.mount(req.Context(), w, name, key, m, q.Get("from")); done || err != nil {
			return err
		}
	}
	if d := q.Get("digest"); d != "" {
		h, err := parseDigest(d)
		if err != nil {
			return err
		}
		r.gc.mu.RLock()
		defer r.gc.mu.RUnlock()
		size, err := r.blobs.put(req.Body, h)
		if err != nil {
			return uploadError(err)
		}
		return r.created(req.Context(), w, key, name, h, size)
	}
	id := newUploadID()
	f, err := os.OpenFile(r.blobs.uploadPath(id), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	f.Close()
	uploadHeaders(w, "/v2/"+name+"/blobs/uploads/"+id, id, 0)
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// mount links a blob another repository has into this one without copying
// it. When the source does not have it, the client gets an ordinary upload.
func (r *Registry) mount(ctx context.Context, w http.ResponseWriter, name, key, digest, from string) (bool, error) {
	h, err := parseDigest(digest)
	if err != nil {
		return false, err
	}
	r.gc.mu.RLock()
	defer r.gc.mu.RUnlock()
	fromKey, err := r.repoKey(ctx, from)
	if err != nil {
		return false, nil
	}
	ok, err := r.linked(ctx, fromKey, h)
	if err != nil || !ok {
		return false, err
	}
	size, err := r.blobs.size(h)
	if err != nil || size < 0 {
		return false, err
	}
	return true, r.created(ctx, w, key, name, h, size)
}

func (r *Registry) created(ctx context.Context, w http.ResponseWriter, key, name string, h v1.Hash, size int64) error {
	if err := r.link(ctx, key, h, size); err != nil {
		return err
	}
	w.Header().Set("Location", "/v2/"+name+"/blobs/"+h.String())
	w.Header().Set("Docker-Content-Digest", h.String())
	w.WriteHeader(http.StatusCreated)
	return nil
}

func uploadError(err error) error {
	var dm errDigestMismatch
	if errors.As(err, &dm) {
		return errorf(http.StatusBadRequest, "DIGEST_INVALID", "%v", err)
	}
	return err
}

func uploadHeaders(w http.ResponseWriter, location, id string, size int64) {
	w.Header().Set("Location", location)
	w.Header().Set("Docker-Upload-UUID", id)
	end := size - 1
	if end < 0 {
		end = 0
	}
	w.Header().Set("Range", fmt.Sprintf("0-%d", end))
}

func appendTo(file string, body io.Reader) (int64, error) {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(f, body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(file)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func (r *Registry) manifest(w http.ResponseWriter, req *http.Request, name, ref string) error {
	switch req.Method {
	case http.MethodGet, http.MethodHead:
		return r.getManifest(w, req, name, ref)
	case http.MethodPut:
		return r.putManifest(w, req, name, ref)
	case http.MethodDelete:
		return r.deleteManifest(req.Context(), w, name, ref)
	}
	return errorf(http.StatusMethodNotAllowed, "UNSUPPORTED", "%s is not supported on manifests", req.Method)
}

// lookup resolves a tag or digest to an image of the repository.
func (r *Registry) lookup(tx state.Tx, name, ref string) (string, *Image, error) {
	key, err := r.repo(tx, name)
	if err != nil {
		return "", nil, err
	}
	digest := ref
	if !strings.Contains(ref, ":") {
		if !tagRE.MatchString(ref) {
			return "", nil, errorf(http.StatusBadRequest, "TAG_INVALID", "invalid tag %q", ref)
		}
		if digest, err = ResolveTag(tx, key, ref); err != nil {
			return "", nil, err
		}
	} else if _, err := parseDigest(ref); err != nil {
		return "", nil, err
	}
	var img *Image
	if digest != "" {
		if img, err = GetImage(tx, key, digest); err != nil {
			return "", nil, err
		}
	}
	if img == nil {
		return "", nil, errorf(http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest %s not found in repository %s", ref, name)
	}
	return key, img, nil
}

func (r *Registry) getManifest(w http.ResponseWriter, req *http.Request, name, ref string) error {
	var img *Image
	if err := r.Store.View(req.Context(), func(tx state.Tx) (err error) {
		_, img, err = r.lookup(tx, name, ref)
		return
	}); err != nil {
		return err
	}
	h, _ := v1.NewHash(img.Digest)
	f, err := r.blobs.open(h)
	if err != nil {
		return err
	}
	defer f.Close()
	w.Header().Set("Content-Type", img.MediaType)
	w.Header().Set("Docker-Content-Digest", img.Digest)
	w.Header().Set("Etag", `"`+img.Digest+`"`)
	w.Header().Set("Content-Length", strconv.FormatInt(img.ManifestSize, 10))
	if req.Method == http.MethodGet {
		io.Copy(w, f)
	}
	return nil
}

func (r *Registry) putManifest(w http.ResponseWriter, req *http.Request, name, ref string) error {
	body, err := io.ReadAll(io.LimitReader(req.Body, MaxManifestSize+1))
	if err != nil {
		return err
	}
	if len(body) > MaxManifestSize {
		return errorf(http.StatusRequestEntityTooLarge, "MANIFEST_INVALID", "manifest is larger than %d bytes", MaxManifestSize)
	}
	h, _, err := v1.SHA256(bytes.NewReader(body))
	if err != nil {
		return err
	}
	tag := ""
	if strings.Contains(ref, ":") {
		want, err := parseDigest(ref)
		if err != nil {
			return err
		}
		if want != h {
			return errorf(http.StatusBadRequest, "DIGEST_INVALID", "manifest digest is %s, not %s", h, want)
		}
	} else if !tagRE.MatchString(ref) {
		return errorf(http.StatusBadRequest, "TAG_INVALID", "invalid tag %q", ref)
	} else {
		tag = ref
	}
	img, refs, err := parseManifest(req.Header.Get("Content-Type"), body)
	if err != nil {
		return err
	}
	img.Digest, img.ManifestSize = h.String(), int64(len(body))

	key, err := r.repoKey(req.Context(), name)
	if err != nil {
		return err
	}
	// Everything the manifest names must be in the repository already, so a
	// pull of an accepted manifest never meets a missing blob.
	if err := r.Store.View(req.Context(), func(tx state.Tx) error {
		for _, d := range refs.blobs {
			if ok, err := tx.Get(KindBlob, BlobPrefix(key)+d.Digest.String(), &blobLink{}); err != nil {
				return err
			} else if !ok && len(d.URLs) == 0 {
				return errorf(http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN", "blob %s named by the manifest was not pushed to %s", d.Digest, name)
			}
			img.Size += d.Size
		}
		for _, d := range refs.manifests {
			child, err := GetImage(tx, key, d.Digest.String())
			if err != nil {
				return err
			}
			if child == nil {
				return errorf(http.StatusBadRequest, "MANIFEST_UNKNOWN", "manifest %s named by the index was not pushed to %s", d.Digest, name)
			}
			img.Size += child.Size
		}
		return nil
	}); err != nil {
		return err
	}
	r.gc.mu.RLock()
	if _, err := r.blobs.put(bytes.NewReader(body), h); err != nil {
		r.gc.mu.RUnlock()
		return err
	}
	err = r.Store.Update(req.Context(), func(tx state.Tx) error {
		var repo Repository
		if ok, err := tx.Get(KindRepository, key, &repo); err != nil || !ok {
			if err == nil {
				err = errorf(http.StatusNotFound, "NAME_UNKNOWN", "repository %s was deleted", name)
			}
			return err
		}
		cur, err := GetImage(tx, key, img.Digest)
		if err != nil {
			return err
		}
		next := *img
		if cur != nil {
			next = *cur
		} else {
			next.PushedAt = r.Now().UTC()
		}
		if err := tx.Put(KindBlob, BlobPrefix(key)+img.Digest, blobLink{Size: img.ManifestSize, Touched: r.Now().UTC()}); err != nil {
			return err
		}
		if tag == "" {
			return tx.Put(KindImage, ImagePrefix(key)+img.Digest, &next)
		}
		if repo.TagMutability == "IMMUTABLE" {
			if old, err := ResolveTag(tx, key, tag); err != nil {
				return err
			} else if old != "" && old != img.Digest {
				return errorf(http.StatusBadRequest, "TAG_INVALID", "The image tag '%s' already exists in the '%s' repository and cannot be overwritten because the repository is immutable.", tag, name)
			}
		}
		return PutTag(tx, key, &next, tag)
	})
	r.gc.mu.RUnlock()
	if err != nil {
		return err
	}
	if r.AfterPush != nil {
		r.AfterPush(name)
	}
	w.Header().Set("Location", "/v2/"+name+"/manifests/"+img.Digest)
	w.Header().Set("Docker-Content-Digest", img.Digest)
	w.WriteHeader(http.StatusCreated)
	return nil
}

type manifestRefs struct {
	blobs     []v1.Descriptor
	manifests []v1.Descriptor
}

// parseManifest reads an image manifest or index of the docker or OCI media
// types; the body's own mediaType wins over a generic Content-Type.
func parseManifest(contentType string, body []byte) (*Image, manifestRefs, error) {
	var refs manifestRefs
	var probe struct {
		SchemaVersion int             `json:"schemaVersion"`
		MediaType     types.MediaType `json:"mediaType"`
		Manifests     json.RawMessage `json:"manifests"`
	}
	if err := json.Unmarshal(body, &probe); err != nil {
		return nil, refs, errorf(http.StatusBadRequest, "MANIFEST_INVALID", "manifest is not JSON: %v", err)
	}
	mt := types.MediaType(contentType)
	if ct, _, err := mime.ParseMediaType(contentType); err == nil {
		mt = types.MediaType(ct)
	}
	if probe.MediaType != "" {
		mt = probe.MediaType
	} else if mt == "" || mt == "application/json" || mt == "application/octet-stream" {
		// An OCI manifest may leave mediaType out; an index has manifests.
		mt = types.OCIManifestSchema1
		if probe.Manifests != nil {
			mt = types.OCIImageIndex
		}
	}
	if probe.SchemaVersion != 2 {
		return nil, refs, errorf(http.StatusBadRequest, "MANIFEST_INVALID", "schemaVersion %d is not supported; push a schema 2 or OCI manifest", probe.SchemaVersion)
	}
	img := &Image{MediaType: string(mt)}
	switch mt {
	case types.DockerManifestSchema2, types.OCIManifestSchema1:
		m, err := v1.ParseManifest(bytes.NewReader(body))
		if err != nil {
			return nil, refs, errorf(http.StatusBadRequest, "MANIFEST_INVALID", "%v", err)
		}
		img.ArtifactMediaType = string(m.Config.MediaType)
		refs.blobs = append([]v1.Descriptor{m.Config}, m.Layers...)
	case types.DockerManifestList, types.OCIImageIndex:
		m, err := v1.ParseIndexManifest(bytes.NewReader(body))
		if err != nil {
			return nil, refs, errorf(http.StatusBadRequest, "MANIFEST_INVALID", "%v", err)
		}
		refs.manifests = m.Manifests
	default:
		return nil, refs, errorf(http.StatusBadRequest, "MANIFEST_INVALID", "unsupported manifest media type %q", mt)
	}
	for _, d := range append(append([]v1.Descriptor(nil), refs.blobs...), refs.manifests...) {
		if d.Digest.Algorithm != "sha256" || len(d.Digest.Hex) != 64 {
			return nil, manifestRefs{}, errorf(http.StatusBadRequest, "MANIFEST_INVALID", "the manifest names %q, which is not a sha256 digest", d.Digest.String())
		}
	}
	return img, refs, nil
}

func (r *Registry) deleteManifest(ctx context.Context, w http.ResponseWriter, name, ref string) error {
	err := r.Store.Update(ctx, func(tx state.Tx) error {
		key, img, err := r.lookup(tx, name, ref)
		if err != nil {
			return err
		}
		if strings.Contains(ref, ":") {
			return DeleteImage(tx, key, img)
		}
		return Untag(tx, key, img, ref)
	})
	if err != nil {
		return err
	}
	r.CollectSoon()
	w.WriteHeader(http.StatusAccepted)
	return nil
}

func (r *Registry) tags(w http.ResponseWriter, req *http.Request, name string) error {
	var tags []string
	err := r.Store.View(req.Context(), func(tx state.Tx) error {
		key, err := r.repo(tx, name)
		if err != nil {
			return err
		}
		prefix := TagPrefix(key)
		return tx.Scan(KindTag, prefix, "", 0, func(k string, _ []byte) error {
			tags = append(tags, strings.TrimPrefix(k, prefix))
			return nil
		})
	})
	if err != nil {
		return err
	}
	sort.Strings(tags)
	return writePage(w, req, "/v2/"+name+"/tags/list", "tags", tags, map[string]any{"name": name})
}

func (r *Registry) catalog(w http.ResponseWriter, req *http.Request) error {
	var names []string
	scope := Scope(r.Account, r.Region)
	err := r.Store.View(req.Context(), func(tx state.Tx) error {
		return tx.Scan(KindRepository, scope, "", 0, func(k string, _ []byte) error {
			names = append(names, strings.TrimPrefix(k, scope))
			return nil
		})
	})
	if err != nil {
		return err
	}
	sort.Strings(names)
	return writePage(w, req, "/v2/_catalog", "repositories", names, map[string]any{})
}

// writePage answers a list with the spec's n/last pagination.
func writePage(w http.ResponseWriter, req *http.Request, path, field string, all []string, out map[string]any) error {
	q := req.URL.Query()
	if last := q.Get("last"); last != "" {
		i := sort.SearchStrings(all, last)
		if i < len(all) && all[i] == last {
			i++
		}
		all = all[i:]
	}
	if n, err := strconv.Atoi(q.Get("n")); err == nil && n >= 0 && n < len(all) {
		all = all[:n]
		if n > 0 {
			w.Header().Set("Link", fmt.Sprintf(`<%s?n=%d&last=%s>; rel="next"`, path, n, url.QueryEscape(all[n-1])))
		}
	}
	if all == nil {
		all = []string{}
	}
	out[field] = all
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(out)
}

// BlobPath is where a stored blob lives (for tests and maintenance).
func (r *Registry) BlobPath(digest string) string {
	h, _ := v1.NewHash(digest)
	return filepath.Join(r.blobs.dir, "blobs", h.Algorithm, h.Hex)
}
