// Command gantry is a self-hosted AWS Fargate: one binary whose subcommands
// run the server and its helpers.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/gantry-dev/gantry/internal/efsnfs"
	"github.com/gantry-dev/gantry/internal/server"
)

const usage = `gantry: a self-hosted AWS Fargate

Usage:
  gantry server [flags]        run the API, the controller and the local agent
  gantry env [--data-dir DIR]  print shell exports for the aws CLI and SDKs
                               (--account NAME: that account's)
  gantry accounts create|ls    accounts on this server ('gantry accounts help')
  gantry keys create|ls|revoke|import  accounts' root access keys
  gantry image load|pull|ls|rm|prune  the image cache ('gantry image help')
  gantry billing report|budgets  Fargate usage and cost, budgets ('gantry billing help')
  gantry exec [CLUSTER] TASK [-i] [-t] [--container C] -- CMD...  run a command in a task (ECS Exec)
  gantry version

Run 'gantry COMMAND -h' for a command's flags.
`

var version = "dev"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if os.Args[1] == execTTYCommand {
		// Hidden, and run inside a container: before any signal handling
		// of the CLI's, so the helper's signals behave as its own.
		os.Exit(runExecTTY(os.Args[2:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "server":
		err = runServer(ctx, args)
	case "accounts":
		err = runAccounts(ctx, args)
	case "keys":
		err = runKeys(ctx, args)
	case "env":
		err = runEnv(args)
	case "image":
		err = runImage(ctx, args)
	case "billing":
		err = runBilling(ctx, args)
	case "efs-mount": // hidden: the agent's helper
		err = runEFSMount(ctx, args)
	case efsnfs.Subcommand: // hidden: the agent's NFS mount helper
		err = runEFSNFSMount(ctx, args)
	case "exec":
		code := runExec(ctx, args)
		stop()
		os.Exit(code)
	case "version", "--version":
		fmt.Println("gantry", version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "gantry: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gantry:", err)
		os.Exit(1)
	}
}

func runServer(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("gantry server", flag.ExitOnError)
	var cfg server.Config
	fs.StringVar(&cfg.DataDir, "data-dir", "/var/lib/gantry", "where state, images and task data live")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:8910", "address of the AWS API endpoint")
	fs.StringVar(&cfg.Region, "region", "us-east-1", "the region this server answers as")
	fs.StringVar(&cfg.AccountID, "account-id", "000000000000", "the local account's 12-digit id (first start only)")
	fs.StringVar(&cfg.ContainerdSocket, "containerd", "/run/containerd/containerd.sock", "host containerd socket to use if it answers; otherwise Gantry starts its own")
	fs.StringVar(&cfg.PostgresDSN, "postgres", "", "PostgreSQL connection string for shared state (default: SQLite in the data directory)")
	fs.StringVar(&cfg.DefaultVPCCIDR, "default-vpc-cidr", "172.31.0.0/16", "range of the default VPC created at first start (pick another if the host's network uses it)")
	fs.StringVar(&cfg.PublicIPRange, "public-ip-range", "198.19.0.0/16", "range tasks' public addresses (assignPublicIp ENABLED) come from; the host forwards them to the tasks")
	fs.StringVar(&cfg.RegistryListen, "registry-listen", "127.0.0.1:8911", "address of the image registry (ECR); repository URIs name it")
	fs.StringVar(&cfg.ImageCacheBudget, "image-cache-budget", "20GiB", "disk the cached images may use; least recently used images no task uses are removed past it (0: never)")
	fs.StringVar(&cfg.LBAddressRange, "lb-address-range", "127.0.0.0/8", "range load balancers take their address (DNSName) from, one each; listeners bind their own port on it")
	fs.StringVar(&cfg.DefaultIsolation, "default-isolation", "sandbox", "isolation of clusters created without the isolation setting: sandbox (gVisor; refused while runsc cannot run here), container (runc), or auto (sandbox where gVisor's runsc works, else container)")
	fs.Int64Var(&cfg.EphemeralMiB, "ephemeral-storage-mib", 0, "give every task this much ephemeral storage (MiB) instead of what it asks for: for small hosts and tests (0: as asked)")
	fs.StringVar(&cfg.EFSMode, "efs-mode", "local", "how tasks mount EFS volumes: local (the tree under the data directory) or nfs (over NFS from the mount target's address, as an agent on another host would)")
	fs.IntVar(&cfg.NetnsPool, "netns-pool", 2, "network namespaces kept attached to each subnet in use, ready for the next tasks (0: none)")
	fs.IntVar(&cfg.SandboxPool, "sandbox-pool", 1, "gVisor sandboxes kept booted for each subnet sandboxed tasks start in, which the next of them take over (about 22 MiB each; 0: none)")
	debug := fs.Bool("debug", false, "log debug messages")
	fs.Parse(args)
	if cfg.EFSMode != "local" && cfg.EFSMode != "nfs" {
		return fmt.Errorf("--efs-mode %q: want local or nfs", cfg.EFSMode)
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	return server.Run(ctx, cfg)
}

func runEnv(args []string) error {
	fs := flag.NewFlagSet("gantry env", flag.ExitOnError)
	dataDir := fs.String("data-dir", "/var/lib/gantry", "the server's data directory")
	endpoint := fs.String("endpoint", "http://127.0.0.1:8910", "the server's endpoint URL")
	account := fs.String("account", "", "an account's name or id (default: the default account's key in credentials.json)")
	postgres := fs.String("postgres", "", "PostgreSQL connection string, with --account, if the server uses one")
	fs.Parse(args)
	c, err := server.LoadCredentials(*dataDir)
	if err != nil {
		return err
	}
	if *account != "" {
		return accountEnv(context.Background(), identityFlags{dataDir, postgres}, *account, *endpoint, c.Region)
	}
	fmt.Printf("export AWS_ENDPOINT_URL=%s\n", *endpoint)
	fmt.Printf("export AWS_ACCESS_KEY_ID=%s\n", c.AccessKeyID)
	fmt.Printf("export AWS_SECRET_ACCESS_KEY=%s\n", c.SecretAccessKey)
	fmt.Printf("export AWS_DEFAULT_REGION=%s\n", c.Region)
	fmt.Printf("export AWS_REGION=%s\n", c.Region)
	fmt.Println("unset AWS_SESSION_TOKEN AWS_PROFILE")
	return nil
}
