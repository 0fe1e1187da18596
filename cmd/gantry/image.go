package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"text/tabwriter"

	ctrd "github.com/containerd/containerd"

	"github.com/gantry-dev/gantry/internal/containerd"
	"github.com/gantry-dev/gantry/internal/images"
)

const imageUsage = `Usage:
  gantry image load [--data-dir DIR] FILE...   import docker-save or OCI image tarballs ("-" reads stdin)
  gantry image ls [--data-dir DIR]             list the images tasks can use without a pull
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
	case "ls", "list":
		fs.Parse(args)
		return withClient(ctx, *dataDir, *socket, func(c *ctrd.Client) error {
			return imageList(ctx, c)
		})
	case "-h", "--help", "help":
		fmt.Print(imageUsage)
		return nil
	default:
		fmt.Fprint(os.Stderr, imageUsage)
		return fmt.Errorf("image: unknown subcommand %q", sub)
	}
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
	imgs, err := c.ListImages(ctx)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tDIGEST\tUNPACKED")
	for _, img := range imgs {
		unpacked, _ := img.IsUnpacked(ctx, images.Snapshotter)
		fmt.Fprintf(w, "%s\t%s\t%v\n", img.Name(), images.Digest(img), unpacked)
	}
	return w.Flush()
}
