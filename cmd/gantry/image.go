package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	ctrd "github.com/containerd/containerd"
	"github.com/dustin/go-humanize"
	"golang.org/x/term"

	"github.com/gantry-dev/gantry/internal/containerd"
	"github.com/gantry-dev/gantry/internal/images"
	"github.com/gantry-dev/gantry/internal/registry"
	"github.com/gantry-dev/gantry/internal/server"
)

const imageUsage = `Usage:
  gantry image load [--data-dir DIR] FILE...   import docker-save or OCI image tarballs ("-" reads stdin)
  gantry image pull [--data-dir DIR] [--creds USER:PASSWORD] REF
                                               pull an image into the cache, with progress per layer
  gantry image ls [--data-dir DIR]             list the cached images: size, last use, the tasks using them
  gantry image rm [--data-dir DIR] REF...      remove images from the cache (not while a task uses them)
  gantry image prune [--data-dir DIR]          remove every cached image no task uses
`

func runImage(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, imageUsage)
		return errors.New("image: missing subcommand")
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("gantry image "+sub, flag.ExitOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), imageUsage); fs.PrintDefaults() }
	dataDir := fs.String("data-dir", "/var/lib/gantry", "the server's data directory")
	socket := fs.String("containerd", "/run/containerd/containerd.sock", "host containerd socket to use if it answers (as the server's flag)")
	switch sub {
	case "load":
		fs.Parse(args)
		if fs.NArg() == 0 {
			fs.Usage()
			return errors.New("image load: no FILE given")
		}
		return withClient(ctx, *dataDir, *socket, func(c *ctrd.Client) error {
			return imageLoad(ctx, c, fs.Args())
		})
	case "pull":
		creds := fs.String("creds", "", "USER:PASSWORD for the registry (default: anonymous; Gantry's own registry needs none)")
		parseInterspersed(fs, args)
		if fs.NArg() != 1 {
			fs.Usage()
			return errors.New("image pull: give one image reference, such as nginx:1.27 or 127.0.0.1:8911/team/app:v1")
		}
		return withClient(ctx, *dataDir, *socket, func(c *ctrd.Client) error {
			return imagePull(ctx, c, *dataDir, fs.Arg(0), *creds, os.Stdout)
		})
	case "ls", "list":
		fs.Parse(args)
		return withClient(ctx, *dataDir, *socket, func(c *ctrd.Client) error {
			return imageList(ctx, c)
		})
	case "rm", "remove":
		fs.Parse(args)
		if fs.NArg() == 0 {
			fs.Usage()
			return errors.New("image rm: no REF given")
		}
		return withClient(ctx, *dataDir, *socket, func(c *ctrd.Client) error {
			return imageRemove(ctx, c, fs.Args())
		})
	case "prune":
		fs.Parse(args)
		return withClient(ctx, *dataDir, *socket, func(c *ctrd.Client) error {
			return imagePrune(ctx, c)
		})
	case "-h", "--help", "help":
		fmt.Print(imageUsage)
		return nil
	default:
		fmt.Fprint(os.Stderr, imageUsage)
		return fmt.Errorf("image: unknown subcommand %q", sub)
	}
}

// parseInterspersed accepts flags after the arguments too (`gantry image
// pull REF --creds U:P`), as users type them.
func parseInterspersed(fs *flag.FlagSet, args []string) {
	var rest []string
	for {
		fs.Parse(args)
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		rest = append(rest, args[0])
		args = args[1:]
	}
	fs.Parse(append([]string{"--"}, rest...))
}

// withClient connects to the containerd the server uses, starting Gantry's
// own (which the server adopts later) when none answers, so images can be
// loaded before the server's first start.
func withClient(ctx context.Context, dataDir, socket string, f func(*ctrd.Client) error) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	d, err := containerd.Ensure(ctx, containerd.Options{DataDir: dataDir, Socket: socket, Log: log})
	if err != nil {
		return err
	}
	defer d.Close()
	c, err := ctrd.New(d.Address, ctrd.WithDefaultNamespace(containerd.Namespace))
	if err != nil {
		return fmt.Errorf("connect to containerd at %s: %w", d.Address, err)
	}
	defer c.Close()
	return f(c)
}

func imageLoad(ctx context.Context, c *ctrd.Client, files []string) error {
	for _, file := range files {
		var r io.Reader = os.Stdin
		if file != "-" {
			f, err := os.Open(file)
			if err != nil {
				return err
			}
			defer f.Close()
			r = f
		}
		loaded, err := images.Load(ctx, c, r)
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		if len(loaded) == 0 {
			return fmt.Errorf("%s: no named image in the archive (docker save needs a NAME:TAG, OCI layouts an org.opencontainers.image.ref.name annotation)", file)
		}
		for _, l := range loaded {
			fmt.Printf("Loaded image: %s %s\n", l.Name, l.Digest)
		}
	}
	return nil
}

func imageList(ctx context.Context, c *ctrd.Client) error {
	all, err := images.List(ctx, c)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tDIGEST\tSIZE\tUNPACKED\tLAST USED\tUSED BY")
	for _, img := range all {
		unpacked := "no"
		if img.Unpacked > 0 {
			unpacked = humanize.IBytes(uint64(img.Unpacked))
		}
		last := "never"
		if !img.LastUsed.IsZero() {
			last = humanize.Time(img.LastUsed)
		}
		users := "-"
		if len(img.UsedBy) > 0 {
			users = strings.Join(img.UsedBy, ",")
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", img.Name, images.ShortDigest(img.Digest), humanize.IBytes(uint64(img.Size)), unpacked, last, users)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	usage, err := images.DiskUsage(ctx, c)
	if err != nil {
		return err
	}
	budget := "no budget"
	if b := images.Published(ctx, c).Budget; b > 0 {
		budget = "budget " + humanize.IBytes(uint64(b))
	}
	fmt.Printf("\n%d images, %s on disk (%s)\n", len(all), humanize.IBytes(uint64(usage)), budget)
	return nil
}

func imageRemove(ctx context.Context, c *ctrd.Client, refs []string) error {
	var failed []string
	for _, ref := range refs {
		if err := images.Remove(ctx, c, ref); err != nil {
			fmt.Fprintln(os.Stderr, "gantry: image rm:", err)
			failed = append(failed, ref)
			continue
		}
		fmt.Println("Removed", ref)
	}
	if len(failed) > 0 {
		return fmt.Errorf("image rm: %d of %d images not removed", len(failed), len(refs))
	}
	return nil
}

func imagePrune(ctx context.Context, c *ctrd.Client) error {
	before, err := images.DiskUsage(ctx, c)
	if err != nil {
		return err
	}
	removed, err := images.Prune(ctx, c)
	for _, r := range removed {
		fmt.Println("Removed", r.Name)
	}
	if err != nil {
		return err
	}
	after, err := images.DiskUsage(ctx, c)
	if err != nil {
		return err
	}
	fmt.Printf("Removed %d images, reclaimed %s\n", len(removed), humanize.IBytes(uint64(max(before-after, 0))))
	return nil
}

// imagePull pulls ref into Gantry's image cache (as a task would, sharing
// the task pulls' per-image single flight when run inside the server's
// process, and containerd's per-layer locks otherwise), showing each layer.
func imagePull(ctx context.Context, c *ctrd.Client, dataDir, ref, creds string, out *os.File) error {
	settings := images.Published(ctx, c)
	if settings.Registry != "" {
		// Gantry's own registry, by its address or its ECR-style name, with
		// a token made from the account's key as the server makes them.
		if cr, err := server.LoadCredentials(dataDir); err == nil {
			tokens := registry.NewTokens(cr.SecretAccessKey)
			images.SetLocalRegistry(&images.LocalRegistry{
				Addr:  settings.Registry,
				Names: map[string]bool{cr.AccountID + ".dkr.ecr." + cr.Region + ".amazonaws.com": true},
				Credentials: func() (string, string) {
					return "AWS", tokens.Issue(time.Now().Add(time.Hour))
				},
			})
		}
	}
	var opts images.PullOptions
	if creds != "" {
		user, pass, ok := strings.Cut(creds, ":")
		if !ok || user == "" {
			return errors.New("image pull: --creds wants USER:PASSWORD")
		}
		opts.Credentials = func(string) (string, string, error) { return user, pass, nil }
	}
	d := &pullDisplay{w: out, tty: term.IsTerminal(int(out.Fd())), printed: map[string]string{}}
	opts.OnProgress = d.update
	fmt.Fprintf(out, "Pulling %s\n", ref)
	start := time.Now()
	img, err := images.Pull(ctx, c, ref, nil, opts)
	if err != nil {
		return err
	}
	images.Flush()
	size, _ := img.Size(ctx)
	fmt.Fprintf(out, "Pulled %s %s (%s in %s)\n", img.Name(), images.Digest(img), humanize.IBytes(uint64(size)), time.Since(start).Round(10*time.Millisecond))
	if settings.Budget > 0 {
		removed, err := images.Evict(ctx, c, settings.Budget, img.Name())
		for _, r := range removed {
			fmt.Fprintf(out, "Evicted %s (least recently used; the image cache budget is %s)\n", r.Name, humanize.IBytes(uint64(settings.Budget)))
		}
		if err != nil {
			return fmt.Errorf("image cache eviction: %w", err)
		}
	}
	return nil
}

// pullDisplay shows a pull's layers: redrawn in place with bars on a
// terminal; otherwise a line when a layer changes state and every few
// seconds while it downloads, which reads well in CI logs.
type pullDisplay struct {
	mu        sync.Mutex
	w         io.Writer
	tty       bool
	drawn     int
	waiting   bool
	printed   map[string]string // layer digest -> last state printed
	lastBytes time.Time
}

func (d *pullDisplay) update(p images.Progress) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if p.Waiting && !d.waiting {
		d.waiting = true
		d.clear()
		fmt.Fprintln(d.w, "Another pull of this image is running (a task, or another gantry image pull); following it")
	}
	if d.tty {
		d.clear()
		for _, l := range p.Layers {
			fmt.Fprintln(d.w, layerLine(l, true))
		}
		d.drawn = len(p.Layers)
		return
	}
	periodic := time.Since(d.lastBytes) >= 3*time.Second
	for _, l := range p.Layers {
		if d.printed[l.Digest] != l.Status || (periodic && l.Status == images.LayerDownloading) {
			d.printed[l.Digest] = l.Status
			fmt.Fprintln(d.w, layerLine(l, false))
		}
	}
	if periodic {
		d.lastBytes = time.Now()
	}
}

// clear moves a terminal's cursor back over the lines drawn last time.
func (d *pullDisplay) clear() {
	if d.tty && d.drawn > 0 {
		fmt.Fprintf(d.w, "\x1b[%dA", d.drawn)
		for i := 0; i < d.drawn; i++ {
			fmt.Fprint(d.w, "\x1b[2K\n")
		}
		fmt.Fprintf(d.w, "\x1b[%dA", d.drawn)
		d.drawn = 0
	}
}

func layerLine(l images.LayerProgress, bar bool) string {
	done := l.Offset
	if l.Status == images.LayerDone {
		done = l.Size
	}
	amount := humanize.IBytes(uint64(done)) + "/" + humanize.IBytes(uint64(l.Size))
	if !bar {
		return fmt.Sprintf("%s: %s %s", images.ShortDigest(l.Digest), l.Status, amount)
	}
	const width = 30
	filled := width
	if l.Size > 0 {
		filled = int(int64(width) * done / l.Size)
	}
	filled = min(max(filled, 0), width)
	return fmt.Sprintf("%s  %-11s [%s%s] %s", images.ShortDigest(l.Digest), l.Status, strings.Repeat("=", filled), strings.Repeat(" ", width-filled), amount)
}
