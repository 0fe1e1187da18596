// Package registry is Gantry's OCI distribution registry: blobs on disk
// under the data directory, deduplicated by digest; repositories, images
// and tags as documents in the state store, which the ECR API
// (internal/ecr) reads and writes too.
package registry

import (
	"regexp"
	"slices"
	"time"

	"github.com/gantry-dev/gantry/internal/state"
)

// Document kinds. Keys start with "ACCOUNT/REGION/REPO" and continue with a
// character repository names cannot hold, so one repository's prefix never
// selects another's documents ("a" vs "a/b").
const (
	KindRepository = "ecr.repository" // ACCOUNT/REGION/REPO
	KindImage      = "ecr.image"      // ACCOUNT/REGION/REPO@DIGEST
	KindTag        = "ecr.tag"        // ACCOUNT/REGION/REPO:TAG
	KindBlob       = "ecr.blob"       // ACCOUNT/REGION/REPO#DIGEST: the repository may read the blob
)

// Repository is one ECR repository.
type Repository struct {
	Name                 string            `json:"name"`
	CreatedAt            time.Time         `json:"createdAt"`
	TagMutability        string            `json:"tagMutability"` // MUTABLE or IMMUTABLE
	ScanOnPush           bool              `json:"scanOnPush,omitempty"`
	EncryptionType       string            `json:"encryptionType,omitempty"`
	KMSKey               string            `json:"kmsKey,omitempty"`
	LifecyclePolicy      string            `json:"lifecyclePolicy,omitempty"`
	LifecycleEvaluatedAt time.Time         `json:"lifecycleEvaluatedAt,omitzero"`
	Tags                 map[string]string `json:"tags,omitempty"`
}

// Image is a manifest (or index) stored in a repository.
type Image struct {
	Digest    string `json:"digest"`
	MediaType string `json:"mediaType"`
	// ArtifactMediaType is the config's media type, as ECR reports it.
	ArtifactMediaType string    `json:"artifactMediaType,omitempty"`
	ManifestSize      int64     `json:"manifestSize"`
	Size              int64     `json:"size"` // config and layers (of every child, for an index)
	Tags              []string  `json:"tags,omitempty"`
	PushedAt          time.Time `json:"pushedAt"`
	LastPulledAt      time.Time `json:"lastPulledAt,omitzero"`
}

type tagDoc struct {
	Digest string `json:"digest"`
}

type blobLink struct {
	Size int64 `json:"size"`
	// Touched is when a push last uploaded, mounted or checked the blob:
	// garbage collection spares an unreferenced link for a grace period
	// after it, as the push's manifest may be on its way.
	Touched time.Time `json:"touched,omitzero"`
}

// ECR's repository name pattern.
var repoNameRE = regexp.MustCompile(`^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$`)

// ValidRepositoryName says whether name is a repository name ECR accepts.
func ValidRepositoryName(name string) bool {
	return len(name) >= 2 && len(name) <= 256 && repoNameRE.MatchString(name)
}

var tagRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)

// Scope is the key prefix of one account's repositories in one region.
func Scope(account, region string) string { return account + "/" + region + "/" }

// RepoKey is a repository's document key.
func RepoKey(account, region, name string) string { return Scope(account, region) + name }

// ImagePrefix selects a repository's images; TagPrefix its tags; BlobPrefix its blob links.
func ImagePrefix(repoKey string) string { return repoKey + "@" }
func TagPrefix(repoKey string) string   { return repoKey + ":" }
func BlobPrefix(repoKey string) string  { return repoKey + "#" }

// GetImage reads one image of a repository.
func GetImage(tx state.Tx, repoKey, digest string) (*Image, error) {
	var img Image
	ok, err := tx.Get(KindImage, ImagePrefix(repoKey)+digest, &img)
	if err != nil || !ok {
		return nil, err
	}
	return &img, nil
}

// ResolveTag returns the digest a tag names, or "".
func ResolveTag(tx state.Tx, repoKey, tag string) (string, error) {
	var t tagDoc
	ok, err := tx.Get(KindTag, TagPrefix(repoKey)+tag, &t)
	if err != nil || !ok {
		return "", err
	}
	return t.Digest, nil
}

// PutTag points tag at digest, taking it off the image it named before.
func PutTag(tx state.Tx, repoKey string, img *Image, tag string) error {
	old, err := ResolveTag(tx, repoKey, tag)
	if err != nil {
		return err
	}
	if old != "" && old != img.Digest {
		prev, err := GetImage(tx, repoKey, old)
		if err != nil {
			return err
		}
		if prev != nil {
			prev.Tags = without(prev.Tags, tag)
			if err := tx.Put(KindImage, ImagePrefix(repoKey)+old, prev); err != nil {
				return err
			}
		}
	}
	if !slices.Contains(img.Tags, tag) {
		img.Tags = append(img.Tags, tag)
	}
	if err := tx.Put(KindImage, ImagePrefix(repoKey)+img.Digest, img); err != nil {
		return err
	}
	return tx.Put(KindTag, TagPrefix(repoKey)+tag, tagDoc{Digest: img.Digest})
}

// DeleteImage removes an image and every tag naming it. Its blobs stay
// until the registry's garbage collection finds nothing else names them.
func DeleteImage(tx state.Tx, repoKey string, img *Image) error {
	for _, t := range img.Tags {
		if _, err := tx.Delete(KindTag, TagPrefix(repoKey)+t); err != nil {
			return err
		}
	}
	_, err := tx.Delete(KindImage, ImagePrefix(repoKey)+img.Digest)
	return err
}

// Untag removes one tag; the image stays, untagged if it was its last.
func Untag(tx state.Tx, repoKey string, img *Image, tag string) error {
	img.Tags = without(img.Tags, tag)
	if err := tx.Put(KindImage, ImagePrefix(repoKey)+img.Digest, img); err != nil {
		return err
	}
	_, err := tx.Delete(KindTag, TagPrefix(repoKey)+tag)
	return err
}

// DeleteRepository removes a repository and everything under it.
func DeleteRepository(tx state.Tx, repoKey string) error {
	for kind, prefix := range map[string]string{KindImage: ImagePrefix(repoKey), KindTag: TagPrefix(repoKey), KindBlob: BlobPrefix(repoKey)} {
		var keys []string
		if err := tx.Scan(kind, prefix, "", 0, func(k string, _ []byte) error { keys = append(keys, k); return nil }); err != nil {
			return err
		}
		for _, k := range keys {
			if _, err := tx.Delete(kind, k); err != nil {
				return err
			}
		}
	}
	_, err := tx.Delete(KindRepository, repoKey)
	return err
}

func without(list []string, s string) []string {
	return slices.DeleteFunc(slices.Clone(list), func(v string) bool { return v == s })
}
