// Package server wires Gantry's parts into `gantry server`: state, the AWS
// API router, the controller, and the local agent with its containerd.
package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/agent/local"
	"github.com/gantry-dev/gantry/internal/autoscaling"
	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/billing"
	"github.com/gantry-dev/gantry/internal/cloudwatch"
	"github.com/gantry-dev/gantry/internal/containerd"
	"github.com/gantry-dev/gantry/internal/controller"
	"github.com/gantry-dev/gantry/internal/ec2"
	"github.com/gantry-dev/gantry/internal/ecr"
	"github.com/gantry-dev/gantry/internal/ecs"
	"github.com/gantry-dev/gantry/internal/efs"
	"github.com/gantry-dev/gantry/internal/elbv2"
	"github.com/gantry-dev/gantry/internal/iam"
	"github.com/gantry-dev/gantry/internal/logs"
	"github.com/gantry-dev/gantry/internal/metadata"
	"github.com/gantry-dev/gantry/internal/metrics"
	"github.com/gantry-dev/gantry/internal/secrets"
	"github.com/gantry-dev/gantry/internal/ssmstream"
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
	DefaultVPCCIDR   string // range of the default VPC made at first start; default 172.31.0.0/16
	PublicIPRange    string // where ENIs' public addresses come from; default ec2.DefaultPublicIPRange
	RegistryListen   string // address of the image registry; default 127.0.0.1:8911
	LBAddressRange   string // where load balancers get their addresses; default 127.0.0.0/8
	ImageCacheBudget string // disk budget of the image cache such as 20GiB; "0": no eviction; default images.DefaultBudget
	DefaultIsolation string // new clusters' isolation: sandbox (the default), container or auto (sandbox where runsc works)
	NetnsPool        int    // network namespaces kept ready per subnet in use (netw pool)
	SandboxPool      int    // gVisor sandboxes kept booted per subnet sandboxed tasks use (agent/local sbpool.go)
	EphemeralMiB     int64  // every task's ephemeral storage, replacing what it asks for; 0: as asked
	EFSMode          string // "nfs": mount EFS volumes over NFS from the mount target, as a remote agent does; "" or "local": the local tree
	Log              *slog.Logger
}

func (c *Config) defaults() {
	if c.DataDir == "" {
		c.DataDir = "/var/lib/gantry"
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8910"
	}
	if c.RegistryListen == "" {
		c.RegistryListen = "127.0.0.1:8911"
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
	ids, err := openIdentities(ctx, cfg.DataDir, store, creds)
	if err != nil {
		return err
	}

	if cfg.PublicIPRange != "" {
		if ec2.PublicIPRange, err = ec2.ParsePublicIPRange(cfg.PublicIPRange); err != nil {
			return err
		}
	}
	if err := ec2.EnsureDefaultVPC(ctx, store, creds.AccountID, cfg.Region, cfg.DefaultVPCCIDR); err != nil {
		return fmt.Errorf("default VPC: %w", err)
	}

	// Secrets Manager and Parameter Store values are sealed with a key kept
	// beside the state, not in it (DATA_DIR/secrets.key, made at first start).
	sealer, err := secrets.LoadOrCreateKey(secrets.KeyFile(cfg.DataDir))
	if err != nil {
		return err
	}
	secretsSvc := &secrets.Service{Store: store, Sealer: sealer, Log: log, RoleAllows: ids.ExecutionRoleAllows}

	// Opened before the agent and closed after it, so that the agent's last
	// log batches still have somewhere to go.
	logStore, err := logs.Open(filepath.Join(cfg.DataDir, "logs.db"))
	if err != nil {
		return err
	}
	defer logStore.Close()
	// CloudWatch metrics (AWS/ECS utilization from the agents' samples,
	// custom metrics) live in a database of their own, like logs.
	metricStore, err := cloudwatch.Open(filepath.Join(cfg.DataDir, "metrics.db"))
	if err != nil {
		return err
	}
	defer metricStore.Close()

	// Billing: meter before the controller starts, so tasks that stopped
	// while the server was down are finalised before it prunes them.
	// GANTRY_BILLING=off switches metering off (benchmarks compare).
	bill, err := startBilling(ctx, cfg, store, log)
	if err != nil {
		return err
	}
	defer bill.stop()

	cd, err := containerd.Ensure(ctx, containerd.Options{DataDir: cfg.DataDir, Socket: cfg.ContainerdSocket, Log: log})
	if err != nil {
		return err
	}
	defer cd.Close()

	// Without the metadata endpoint tasks still run; their containers just
	// get no ECS_CONTAINER_METADATA_URI_V4.
	md, err := metadata.Listen(cfg.DataDir, log)
	if err != nil {
		log.Warn("task metadata endpoint unavailable", "err", err)
		md = nil
	} else {
		defer md.Close()
		md.Credentials = func(ctx context.Context, taskARN, roleARN string) (metadata.Credentials, error) {
			c, err := ids.TaskCredentials(ctx, taskARN, roleARN)
			return metadata.Credentials(c), err
		}
	}
	tasksAPI := listenTaskAPI(md, cfg.Listen, log)
	defer tasksAPI.close()
	mets := metrics.New()

	ctl := &controller.Controller{Store: store, Log: log}
	ag, err := local.New(ctx, local.Config{DataDir: cfg.DataDir, ContainerdAddress: cd.Address, Reporter: mets.Reporter(ctl), LogSink: logs.Sink{Store: logStore}, Secrets: secretsSvc, Log: log, Metadata: md, ExecURL: execURL(cfg.Listen), NetnsPool: cfg.NetnsPool, SandboxPool: cfg.SandboxPool, EphemeralMiB: cfg.EphemeralMiB, EFSMode: cfg.EFSMode})
	if err != nil {
		return err
	}
	defer ag.Close()
	if md != nil {
		md.Serve(ag)
	}
	ctl.Agent = mets.Agent(ag)
	mets.WatchTasks(ag)
	mets.Register(local.LogCollectors()...)
	if err := ctl.Start(ctx); err != nil {
		return err
	}

	// The service scheduler starts after the controller has reconciled, so
	// it counts tasks as they really are.
	// Load balancers: listeners restored before the scheduler registers
	// services' tasks with them.
	elbSvc := &elbv2.Service{Store: store, Log: log, AddressRange: cfg.LBAddressRange, Metrics: metricStore}
	elbSvc.Start(ctx)
	defer elbSvc.Stop()
	isolation, err := defaultIsolation(ctx, cfg.DefaultIsolation, ag, log)
	if err != nil {
		return err
	}
	ecsSvc := &ecs.Service{Store: store, Controller: ctl, Log: log, Targets: elbSvc, DefaultIsolation: isolation}
	ecsSvc.TaskRoles = taskRoleCheck(ids)
	ecsSvc.StartScheduler(ctx)
	defer ecsSvc.StopScheduler()

	collector := &cloudwatch.Collector{Store: metricStore, State: store, Sources: []agent.UsageSource{ag}, Log: log}
	collector.Start(ctx)
	defer collector.Stop()
	cwSvc := &cloudwatch.Service{Store: metricStore, Log: log, State: store}
	// Application Auto Scaling evaluates target-tracking policies once a
	// period: a minute, as AWS's alarms, unless GANTRY_AUTOSCALING_PERIOD
	// (a Go duration) says otherwise; tests shorten it.
	scaling := &autoscaling.Service{Store: store, Metrics: metricStore, ECS: ecsSvc, Log: log}
	if v := os.Getenv("GANTRY_AUTOSCALING_PERIOD"); v != "" {
		if d, err := time.ParseDuration(v); err == nil && d >= time.Second {
			scaling.Period = d
		} else {
			log.Warn("ignoring GANTRY_AUTOSCALING_PERIOD: want a duration of at least 1s", "value", v)
		}
	}
	scaling.Start(ctx)
	cwSvc.Actions = scaling // alarms invoke step scaling policies
	cwSvc.StartAlarms(ctx)
	defer scaling.Stop()

	reg, err := startRegistry(ctx, cfg, store, creds, log, cd.Address)
	if err != nil {
		return err
	}
	defer reg.close()

	// Accounts made since (gantry accounts create) get theirs on first use.
	accountVPCs := &ec2.AccountVPCs{Store: store, Region: cfg.Region}
	router := &awsapi.Router{
		Keys: ids, // accounts' and users' keys, read from state on every request
		Authorize: func(r *http.Request, id *awsapi.Identity, action string, body []byte) *awsapi.Error {
			if err := accountVPCs.Ensure(r.Context(), id.Account); err != nil {
				log.Warn("default VPC of a new account", "account", id.Account, "err", err)
			}
			return ids.Authorize(r, id, action, body)
		},
		ActionPrefix: iamActionPrefix,
		JSON: map[string]*awsapi.JSONService{
			ecs.TargetPrefix:           ecsSvc.JSON(),
			ecr.TargetPrefix:           reg.ecr.JSON(),
			logs.TargetPrefix:          (&logs.Service{Store: logStore, Log: log}).JSON(),
			secrets.TargetPrefix:       secretsSvc.JSON(),
			secrets.SSMTargetPrefix:    secretsSvc.SSM(),
			cloudwatch.TargetPrefix:    cwSvc.JSON(),
			autoscaling.TargetPrefix:   scaling.JSON(),
			billing.CETargetPrefix:     bill.svc.CostExplorer(),
			billing.GantryTargetPrefix: bill.svc.GantryAPI(),
		},
		Query: map[string]awsapi.QueryService{
			cloudwatch.SigningName: cwSvc.Query(),
			"iam":                  &iam.Service{Store: ids},
			"sts":                  &iam.STS{Store: ids},
			elbv2.SigningName:      elbSvc,
			"ec2":                  &ec2.Service{Store: store, DefaultVPCCIDR: cfg.DefaultVPCCIDR, OnChange: func(string) { ctl.FirewallChanged() }},
		},
		REST: map[string]awsapi.RESTService{
			efs.SigningName: &efs.Service{Store: store, DataDir: cfg.DataDir, Log: log},
		},
		Log: log,
		Observe: func(service, op string, status int, elapsed time.Duration) {
			mets.ObserveAPI(service, op, strconv.Itoa(status), elapsed)
		},
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (is another gantry server running? use --listen to pick another address)", cfg.Listen, err)
	}
	// ECS Exec for AWS's session-manager-plugin: SSM data channels at /ssm/, bridged onto the agent's exec streams.
	ssmExec := &ssmstream.Handler{Exec: ag.ExecHandler(), AgentURL: func(id string) string { return execURL(cfg.Listen) + id }, Log: log}
	srv := &http.Server{Handler: ssmstream.Mount(withExec(withMetrics(router, mets.Handler()), ag.ExecHandler()), ssmExec), ReadHeaderTimeout: 10 * time.Second}
	log.Info("gantry server ready", "endpoint", "http://"+ln.Addr().String(), "dataDir", cfg.DataDir, "containerd", cd.Address)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	tasksAPI.serve(router, log)
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

// withMetrics serves GET /metrics, unauthenticated as Prometheus scrapes,
// beside the API: AWS requests never GET that path (Query GETs are on /).
func withMetrics(api, metrics http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/metrics" {
			metrics.ServeHTTP(w, r)
			return
		}
		api.ServeHTTP(w, r)
	})
}

type billingParts struct {
	svc   *billing.Service
	meter *billing.Meter
}

func (b *billingParts) stop() {
	if b.meter != nil {
		b.meter.Stop()
	}
}

// startBilling loads the usage ledger, runs a first meter pass and starts
// metering (unless GANTRY_BILLING=off). Prices come from DATA_DIR/prices.json,
// written with the defaults on first start and re-read when it changes.
func startBilling(ctx context.Context, cfg Config, store state.Store, log *slog.Logger) (*billingParts, error) {
	ledger := billing.NewLedger()
	if err := ledger.Load(ctx, store); err != nil {
		return nil, fmt.Errorf("billing: load usage: %w", err)
	}
	svc := &billing.Service{Ledger: ledger, Store: store, Log: log}
	parts := &billingParts{svc: svc}
	if os.Getenv("GANTRY_BILLING") == "off" {
		log.Info("billing metering is off (GANTRY_BILLING=off)")
		return parts, nil
	}
	path, err := billing.EnsurePriceFile(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("billing: price list: %w", err)
	}
	m := &billing.Meter{Store: store, Prices: &billing.Prices{Path: path, Log: log}, Ledger: ledger, Log: log, AfterPass: svc.CheckBudgets}
	if err := m.Pass(ctx); err != nil {
		log.Warn("billing meter pass", "err", err)
	}
	m.Start(ctx)
	svc.Meter, parts.meter = m, m
	return parts, nil
}

// execPath is where ECS Exec sessions' streams are served, beside the API
// (AWS requests are POSTs, or Query GETs on /): websockets authorized by
// each session's one-time token rather than SigV4.
const execPath = "/exec/"

func withExec(api, exec http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, execPath) {
			exec.ServeHTTP(w, r)
			return
		}
		api.ServeHTTP(w, r)
	})
}

// execURL is the streams' base URL as clients reach the API at listen; a
// wildcard listen address is given as loopback.
func execURL(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "ws://" + listen + execPath
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "ws://" + net.JoinHostPort(host, port) + execPath
}

// defaultIsolation resolves --default-isolation on this host and says at
// start-up what new clusters get. A host that cannot run sandboxes is
// said loudly, with the reason and both ways out, whatever the flag:
// clusters asking for sandbox will be refused, and the operator should
// know why before the first one is.
func defaultIsolation(ctx context.Context, want string, ag agent.Agent, log *slog.Logger) (string, error) {
	info, err := ag.Info(ctx)
	if err != nil {
		return "", err
	}
	isolation, unavailable, err := ecs.ResolveDefaultIsolation(want, info)
	if err != nil {
		return "", err
	}
	const fix = "install gVisor's runsc with scripts/build-runsc.sh (the README's scripts/install.sh runs it) and restart, or start the server with --default-isolation container"
	switch {
	case unavailable != "" && isolation == agent.IsolationSandbox:
		log.Error("SANDBOX ISOLATION UNAVAILABLE: new clusters default to isolation=sandbox and CreateCluster refuses them, as it refuses isolation=sandbox; clusters with isolation=container work",
			"reason", unavailable, "fix", fix)
	case unavailable != "":
		log.Warn("SANDBOX ISOLATION UNAVAILABLE: new clusters default to isolation=container; isolation=sandbox is refused",
			"reason", unavailable, "fix", fix, "flag", cmp.Or(want, agent.IsolationSandbox))
	default:
		log.Info("new clusters default to isolation="+isolation, "flag", cmp.Or(want, agent.IsolationSandbox))
	}
	return isolation, nil
}
