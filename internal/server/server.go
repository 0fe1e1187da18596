// Package server wires Gantry's parts into `gantry server`: state, the AWS
// API router, the controller, and the local agent with its containerd.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/gantry-dev/gantry/internal/agent/local"
	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/containerd"
	"github.com/gantry-dev/gantry/internal/controller"
	"github.com/gantry-dev/gantry/internal/ec2"
	"github.com/gantry-dev/gantry/internal/ecs"
	"github.com/gantry-dev/gantry/internal/state"
)

// Config is `gantry server`'s configuration; zero values take the defaults.
type Config struct {
	DataDir          string // default /var/lib/gantry
	Listen           string // default 127.0.0.1:8910
	Region           string // default us-east-1
	AccountID        string // default 000000000000
	ContainerdSocket string // host containerd to try first
	PostgresDSN      string // shared state instead of the embedded SQLite
	Log              *slog.Logger
}

func (c *Config) defaults() {
	if c.DataDir == "" {
		c.DataDir = "/var/lib/gantry"
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8910"
	}
	if c.Region == "" {
		c.Region = "us-east-1"
	}
	if c.AccountID == "" {
		c.AccountID = "000000000000"
	}
	if c.Log == nil {
		c.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
}

// Run serves until ctx ends, then shuts down; running tasks keep running.
func Run(ctx context.Context, cfg Config) error {
	cfg.defaults()
	log := cfg.Log
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	creds, err := loadOrCreateCredentials(cfg.DataDir, cfg.AccountID, cfg.Region)
	if err != nil {
		return err
	}

	var store state.Store
	if cfg.PostgresDSN != "" {
		store, err = state.OpenPostgres(cfg.PostgresDSN)
	} else {
		store, err = state.OpenSQLite(filepath.Join(cfg.DataDir, "state.db"))
	}
	if err != nil {
		return err
	}
	defer store.Close()

	if err := ec2.EnsureDefaultVPC(ctx, store, creds.AccountID, cfg.Region); err != nil {
		return fmt.Errorf("default VPC: %w", err)
	}

	cd, err := containerd.Ensure(ctx, containerd.Options{DataDir: cfg.DataDir, Socket: cfg.ContainerdSocket, Log: log})
	if err != nil {
		return err
	}
	defer cd.Close()

	ctl := &controller.Controller{Store: store, Log: log}
	ag, err := local.New(ctx, local.Config{DataDir: cfg.DataDir, ContainerdAddress: cd.Address, Reporter: ctl, Log: log})
	if err != nil {
		return err
	}
	defer ag.Close()
	ctl.Agent = ag
	if err := ctl.Start(ctx); err != nil {
		return err
	}

	router := &awsapi.Router{
		Keys: keyStore{creds.AccessKeyID: creds},
		JSON: map[string]*awsapi.JSONService{
			ecs.TargetPrefix: (&ecs.Service{Store: store, Controller: ctl, Log: log}).JSON(),
		},
		Query: map[string]awsapi.QueryService{
			"ec2": &ec2.Service{Store: store},
		},
		Log: log,
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (is another gantry server running? use --listen to pick another address)", cfg.Listen, err)
	}
	srv := &http.Server{Handler: router, ReadHeaderTimeout: 10 * time.Second}
	log.Info("gantry server ready", "endpoint", "http://"+ln.Addr().String(), "dataDir", cfg.DataDir, "containerd", cd.Address)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	ctl.Stop()
	return nil
}
