package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	ctrd "github.com/containerd/containerd"

	"github.com/gantry-dev/gantry/internal/containerd"
	"github.com/gantry-dev/gantry/internal/ecr"
	"github.com/gantry-dev/gantry/internal/images"
	"github.com/gantry-dev/gantry/internal/registry"
	"github.com/gantry-dev/gantry/internal/state"
)

// registryParts is the image registry (its own listener) and the ECR API
// over the same repositories.
type registryParts struct {
	ecr  *ecr.Service
	srv  *http.Server
	stop context.CancelFunc
	// containerd is the image cache's client.
	containerd *ctrd.Client
}

// startRegistry serves the OCI registry on cfg.RegistryListen with blobs in
// DATA_DIR/registry, and routes task image pulls of its names to it.
func startRegistry(ctx context.Context, cfg Config, store state.Store, creds *Credentials, log *slog.Logger, containerdAddr string) (*registryParts, error) {
	budget := int64(images.DefaultBudget)
	if cfg.ImageCacheBudget != "" {
		n, err := images.ParseSize(cfg.ImageCacheBudget)
		if err != nil {
			return nil, fmt.Errorf("--image-cache-budget: %w", err)
		}
		budget = n
	}
	tokens := registry.NewTokens(creds.SecretAccessKey)
	reg, err := registry.Open(filepath.Join(cfg.DataDir, "registry"), &registry.Registry{
		Store: store, Account: creds.AccountID, Region: cfg.Region, Tokens: tokens, Log: log,
	})
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.RegistryListen)
	if err != nil {
		return nil, fmt.Errorf("registry: listen on %s: %w (use --registry-listen to pick another address)", cfg.RegistryListen, err)
	}
	host := advertised(ln.Addr().(*net.TCPAddr))
	svc := &ecr.Service{Store: store, Registry: reg, Host: host, Log: log}
	lctx, stop := context.WithCancel(ctx)
	reg.AfterPush = func(repo string) {
		if err := svc.ApplyLifecycle(lctx, repo); err != nil {
			log.Warn("lifecycle policy", "repository", repo, "err", err)
		}
	}
	go func() {
		// Policies with sinceImagePushed expire images as time passes, not
		// only when something is pushed.
		t := time.NewTicker(time.Hour)
		defer t.Stop()
		for {
			svc.ApplyAllLifecycles(lctx)
			reg.CollectSoon()
			select {
			case <-lctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	images.SetLocalRegistry(&images.LocalRegistry{
		Addr:  host,
		Names: map[string]bool{creds.AccountID + ".dkr.ecr." + cfg.Region + ".amazonaws.com": true},
		Credentials: func() (string, string) {
			return "AWS", tokens.Issue(time.Now().Add(time.Hour))
		},
	})
	// The image cache: kept within its budget, and the budget and the
	// registry's address published for `gantry image pull`.
	cc, err := ctrd.New(containerdAddr, ctrd.WithDefaultNamespace(containerd.Namespace))
	if err != nil {
		stop()
		return nil, fmt.Errorf("image cache: connect to containerd: %w", err)
	}
	if err := images.Publish(lctx, cc, images.Settings{Budget: budget, Registry: host}); err != nil {
		log.Warn("image cache: cannot publish settings for gantry image pull", "err", err)
	}
	(&images.Cache{Client: cc, Budget: budget, Log: log.Info}).Start(lctx, time.Minute)
	srv := &http.Server{Handler: reg, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("registry stopped", "err", err)
		}
	}()
	log.Info("registry ready", "endpoint", "http://"+host)
	return &registryParts{ecr: svc, srv: srv, stop: stop, containerd: cc}, nil
}

func (p *registryParts) close() {
	p.stop()
	defer p.containerd.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.srv.Shutdown(ctx)
}

// advertised is the address clients use: a wildcard listener is reached on
// loopback from this host.
func advertised(a *net.TCPAddr) string {
	if a.IP.IsUnspecified() {
		return fmt.Sprintf("127.0.0.1:%d", a.Port)
	}
	return a.String()
}
