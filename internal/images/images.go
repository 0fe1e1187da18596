// Package images gets container images into containerd: loaded from
// docker-save or OCI tarballs, or pulled from their registry (one pull per
// image however many tasks ask at once, with per-layer progress), and
// unpacked so a task's first start does not wait for it. It also keeps the
// image cache within its disk budget (cache.go).
package images

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/platforms"
	"github.com/distribution/reference"

	gcontainerd "github.com/gantry-dev/gantry/internal/containerd"
)

// Snapshotter is where images are unpacked: the one containerd uses by
// default on Linux, so tasks mount their rootfs without a second unpack.
const Snapshotter = "overlayfs"

// Normalize turns a reference as users write it into the full name
// containerd stores: "nginx" is "docker.io/library/nginx:latest", a digest
// reference keeps its digest (and drops any tag beside it).
func Normalize(ref string) (string, error) {
	named, err := reference.ParseDockerRef(strings.TrimSpace(ref))
	if err != nil {
		return "", fmt.Errorf("invalid image reference %q: %w", ref, err)
	}
	return named.String(), nil
}

// Loaded is one image a tarball named.
type Loaded struct {
	Name   string
	Digest string
}

// Load imports a docker-save or OCI image-layout tarball, names its images
// by their normalized tags and unpacks them for this host's platform.
// Entries without a usable name are imported but not listed.
func Load(ctx context.Context, client *containerd.Client, r io.Reader) ([]Loaded, error) {
	ctx = withNamespace(ctx)
	imgs, err := client.Import(ctx, r,
		// OCI layouts carry the name in org.opencontainers.image.ref.name as
		// written (often short); store it the way Ensure will look it up.
		containerd.WithImageRefTranslator(func(name string) string {
			n, err := Normalize(name)
			if err != nil {
				return ""
			}
			return n
		}),
		containerd.WithImportPlatform(platforms.Default()),
	)
	if err != nil {
		return nil, fmt.Errorf("import image archive: %w", err)
	}
	var out []Loaded
	for _, i := range imgs {
		img := containerd.NewImage(client, i)
		if err := unpack(ctx, img); err != nil {
			return out, fmt.Errorf("unpack %s: %w", i.Name, err)
		}
		out = append(out, Loaded{Name: i.Name, Digest: i.Target.Digest.String()})
	}
	return out, nil
}

// Digest is the image's content digest as ECS reports it (imageDigest):
// the manifest's, or the index's for a multi-platform image.
func Digest(img containerd.Image) string { return img.Target().Digest.String() }

// PullOptions tune Ensure's pulls. The zero value pulls anonymously over
// HTTPS with the system's CA store.
type PullOptions struct {
	// Credentials returns the user name and secret (or "" and an identity
	// token) for a registry host such as "docker.io"; "" and "" is
	// anonymous.
	Credentials func(host string) (user, secret string, err error)
	// CertsDir holds per-registry hosts.toml and CA files in containerd's
	// certs.d layout; empty: /etc/containerd/certs.d.
	CertsDir string
	// ResolveTimeout bounds finding the manifest; empty: 30 s.
	ResolveTimeout time.Duration
	// OnProgress, if set, gets the state of every layer several times a
	// second while a pull runs, and once more at its end.
	OnProgress func(Progress)
}

// PullError is an image that could not be found locally nor pulled.
type PullError struct {
	Ref  string // normalized reference
	Op   string // what failed
	Err  error
	Hint string // what to do about it
}

func (e *PullError) Error() string {
	msg := fmt.Sprintf("CannotPullContainerError: %s %s: %v", e.Op, e.Ref, e.Err)
	if e.Hint != "" {
		msg += ": " + e.Hint
	}
	return msg
}

func (e *PullError) Unwrap() error { return e.Err }

// Ensure returns the image ref names, unpacked: the local one if containerd
// has it, else pulled from its registry. progress, if not nil, gets a line
// about every second while layers download.
func Ensure(ctx context.Context, client *containerd.Client, ref string, progress func(msg string), opts ...PullOptions) (containerd.Image, error) {
	return get(ctx, client, ref, progress, false, opts)
}

// Pull fetches ref from its registry even when it is cached, so a moved
// tag is followed; layers already here are not downloaded again.
func Pull(ctx context.Context, client *containerd.Client, ref string, progress func(msg string), opts ...PullOptions) (containerd.Image, error) {
	return get(ctx, client, ref, progress, true, opts)
}

func get(ctx context.Context, client *containerd.Client, ref string, progress func(msg string), always bool, opts []PullOptions) (containerd.Image, error) {
	ctx = withNamespace(ctx)
	var o PullOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	if progress == nil {
		progress = func(string) {}
	}
	name, err := Normalize(ref)
	if err != nil {
		return nil, &PullError{Ref: ref, Op: "parse reference", Err: err, Hint: "use a name such as nginx, nginx:1.27 or registry.example.com/team/app@sha256:..."}
	}
	var img containerd.Image
	if !always {
		if img, err = local(ctx, client, name); err != nil {
			return nil, err
		}
	}
	if img != nil {
		if err := unpack(ctx, img); err != nil {
			return nil, &PullError{Ref: name, Op: "unpack local image", Err: err}
		}
	} else if img, err = pull(ctx, client, name, progress, o); err != nil {
		return nil, err
	}
	used(ctx, client, img)
	return img, nil
}

// local finds name in containerd's image store; a digest reference also
// matches an image stored under another name with that digest.
func local(ctx context.Context, client *containerd.Client, name string) (containerd.Image, error) {
	img, err := client.GetImage(ctx, name)
	if err == nil {
		return img, nil
	}
	if !errdefs.IsNotFound(err) {
		return nil, &PullError{Ref: name, Op: "look up local image", Err: err, Hint: "is containerd running?"}
	}
	if _, dgst, ok := strings.Cut(name, "@"); ok {
		imgs, err := client.ListImages(ctx, "target.digest=="+dgst)
		if err != nil {
			return nil, &PullError{Ref: name, Op: "look up local image", Err: err}
		}
		if len(imgs) > 0 {
			return imgs[0], nil
		}
	}
	return nil, nil
}

func unpack(ctx context.Context, img containerd.Image) error {
	ok, err := img.IsUnpacked(ctx, Snapshotter)
	if err != nil || ok {
		return err
	}
	return img.Unpack(ctx, Snapshotter)
}

func withNamespace(ctx context.Context) context.Context {
	if _, ok := namespaces.Namespace(ctx); ok {
		return ctx
	}
	return namespaces.WithNamespace(ctx, gcontainerd.Namespace)
}

// IsPullError says whether err is (or wraps) a failed pull.
func IsPullError(err error) bool {
	var pe *PullError
	return errors.As(err, &pe)
}
