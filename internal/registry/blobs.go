package registry

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// blobStore keeps blobs under dir/blobs/sha256/HEX, written once and never
// changed, and uploads in progress under dir/uploads. A blob appears under
// its name only by a rename after its digest checked, so a push that dies
// halfway leaves at most an upload file, never a wrong blob.
type blobStore struct {
	dir string
}

func (b *blobStore) init() error {
	for _, d := range []string{"blobs/sha256", "uploads"} {
		if err := os.MkdirAll(filepath.Join(b.dir, d), 0o700); err != nil {
			return err
		}
	}
	// Uploads do not outlive the server (clients restart a push whose
	// session is gone), so leftovers are only litter.
	leftovers, _ := filepath.Glob(filepath.Join(b.dir, "uploads", "*"))
	for _, f := range leftovers {
		os.Remove(f)
	}
	return nil
}

func (b *blobStore) path(h v1.Hash) string {
	return filepath.Join(b.dir, "blobs", h.Algorithm, h.Hex)
}

// size reports a stored blob's size, or -1 if it is not stored.
func (b *blobStore) size(h v1.Hash) (int64, error) {
	fi, err := os.Stat(b.path(h))
	if errors.Is(err, os.ErrNotExist) {
		return -1, nil
	}
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func (b *blobStore) open(h v1.Hash) (*os.File, error) { return os.Open(b.path(h)) }

func (b *blobStore) uploadPath(id string) string { return filepath.Join(b.dir, "uploads", id) }

func newUploadID() string {
	var r [16]byte
	rand.Read(r[:])
	return hex.EncodeToString(r[:])
}

func validUploadID(id string) bool {
	if len(id) != 32 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}

// commit checks that the upload file holds want and moves it into place.
// On a mismatch the upload is discarded, as the spec asks.
func (b *blobStore) commit(uploadFile string, want v1.Hash) (int64, error) {
	f, err := os.Open(uploadFile)
	if err != nil {
		return 0, err
	}
	got, size, err := v1.SHA256(f)
	f.Close()
	if err != nil {
		return 0, err
	}
	if got != want {
		os.Remove(uploadFile)
		return 0, errDigestMismatch{want: want, got: got}
	}
	if n, err := b.size(want); err != nil {
		return 0, err
	} else if n >= 0 {
		os.Remove(uploadFile) // already stored: deduplicated
		return n, nil
	}
	if err := syncFile(uploadFile); err != nil {
		return 0, err
	}
	if err := os.Rename(uploadFile, b.path(want)); err != nil {
		return 0, err
	}
	return size, syncDir(filepath.Dir(b.path(want)))
}

// put stores content read from r whose digest must be want.
func (b *blobStore) put(r io.Reader, want v1.Hash) (int64, error) {
	p := b.uploadPath(newUploadID())
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(p)
		return 0, err
	}
	return b.commit(p, want)
}

type errDigestMismatch struct{ want, got v1.Hash }

func (e errDigestMismatch) Error() string {
	return fmt.Sprintf("digest mismatch: content is %s, not %s", e.got, e.want)
}

func syncFile(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func syncDir(p string) error { return syncFile(p) }
