package registry

import (
	"errors"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"
)

// FuzzParseManifest feeds pushed manifests to the parser: whatever arrives,
// it answers a distribution error a client can show (400), never a panic,
// and what it accepts is one of the four media types it can serve back.
// The kept corpus is in testdata/fuzz/FuzzParseManifest.
func FuzzParseManifest(f *testing.F) {
	f.Add("application/vnd.docker.distribution.manifest.v2+json", []byte(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},"layers":[]}`))
	f.Add("", []byte(`{"schemaVersion":2,"manifests":[]}`))
	f.Add("application/json", []byte(`{"schemaVersion":1}`))
	f.Add("text/plain; charset=utf-8", []byte(`not json`))
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		img, refs, err := parseManifest(contentType, body)
		if err != nil {
			var re *regError
			if !errors.As(err, &re) || re.Status != http.StatusBadRequest {
				t.Fatalf("error %v is not a 400 distribution error", err)
			}
			return
		}
		switch types.MediaType(img.MediaType) {
		case types.DockerManifestSchema2, types.OCIManifestSchema1:
			if len(refs.manifests) > 0 {
				t.Fatalf("an image manifest with child manifests: %+v", refs)
			}
		case types.DockerManifestList, types.OCIImageIndex:
			if len(refs.blobs) > 0 {
				t.Fatalf("an index with blobs: %+v", refs)
			}
		default:
			t.Fatalf("accepted media type %q", img.MediaType)
		}
		for _, d := range append(refs.blobs, refs.manifests...) {
			if d.Digest.Algorithm == "" || d.Digest.Hex == "" {
				t.Fatalf("accepted a reference without a digest: %+v", d)
			}
		}
	})
}
