package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/gantry-dev/gantry/internal/iam"
	"github.com/gantry-dev/gantry/internal/state"
)

const accountsUsage = `Usage:
  gantry accounts create NAME [--id 12-DIGITS]   add an account (and a first root key)
  gantry accounts ls                             list accounts
  gantry keys create --account NAME              new root key pair for an account
  gantry keys ls [--account NAME]                list keys (never their secrets)
  gantry keys revoke KEY_ID                      delete a key: it stops working at once
  gantry keys import --account NAME KEY_ID SECRET  bring an existing key pair
  gantry env --account NAME                      exports for that account's newest root key

All take --data-dir DIR (default /var/lib/gantry) and --postgres DSN when the
server keeps its state in PostgreSQL. They work while the server runs.
`

// parseMixed parses flags that may come before or after positional args.
func parseMixed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

type identityFlags struct{ dataDir, postgres *string }

func addIdentityFlags(fs *flag.FlagSet) identityFlags {
	return identityFlags{
		dataDir:  fs.String("data-dir", "/var/lib/gantry", "the server's data directory"),
		postgres: fs.String("postgres", "", "PostgreSQL connection string, if the server uses one"),
	}
}

// open opens the server's state and its secret key file.
func (f identityFlags) open() (*iam.Store, func(), error) {
	if _, err := os.Stat(filepath.Join(*f.dataDir, iam.KeyFileName)); err != nil {
		return nil, nil, fmt.Errorf("no accounts in %s: start `gantry server --data-dir %s` once to create them", *f.dataDir, *f.dataDir)
	}
	sealer, err := iam.OpenSealer(*f.dataDir, false)
	if err != nil {
		return nil, nil, err
	}
	var st state.Store
	if *f.postgres != "" {
		st, err = state.OpenPostgres(*f.postgres)
	} else {
		st, err = state.OpenSQLite(filepath.Join(*f.dataDir, "state.db"))
	}
	if err != nil {
		return nil, nil, err
	}
	return &iam.Store{State: st, Sealer: sealer}, func() { st.Close() }, nil
}

func runAccounts(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" {
		fmt.Print(accountsUsage)
		return nil
	}
	fs := flag.NewFlagSet("gantry accounts "+args[0], flag.ExitOnError)
	idf := addIdentityFlags(fs)
	id := fs.String("id", "", "12-digit account id (default: random)")
	pos, err := parseMixed(fs, args[1:])
	if err != nil {
		return err
	}
	ids, done, err := idf.open()
	if err != nil {
		return err
	}
	defer done()
	switch args[0] {
	case "create":
		if len(pos) != 1 {
			return errors.New("usage: gantry accounts create NAME [--id 12-DIGITS]")
		}
		a, err := ids.CreateAccount(ctx, pos[0], *id)
		if err != nil {
			return err
		}
		k, _, err := ids.CreateKey(ctx, a.ID, "")
		if err != nil {
			return err
		}
		fmt.Printf("account %s (%s) created; root key %s\n", a.Name, a.ID, k.ID)
		fmt.Printf("eval \"$(gantry env --account %s)\" to use it\n", a.Name)
	case "ls", "list":
		all, err := ids.Accounts(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tCREATED")
		for _, a := range all {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", a.ID, a.Name, a.Created.Format("2006-01-02 15:04:05"))
		}
		tw.Flush()
	default:
		return fmt.Errorf("unknown accounts command %q\n%s", args[0], accountsUsage)
	}
	return nil
}

func runKeys(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" {
		fmt.Print(accountsUsage)
		return nil
	}
	fs := flag.NewFlagSet("gantry keys "+args[0], flag.ExitOnError)
	idf := addIdentityFlags(fs)
	account := fs.String("account", "", "account name or id")
	pos, err := parseMixed(fs, args[1:])
	if err != nil {
		return err
	}
	ids, done, err := idf.open()
	if err != nil {
		return err
	}
	defer done()
	findAccount := func() (*iam.Account, error) {
		if *account == "" {
			return nil, errors.New("--account NAME is required")
		}
		return ids.FindAccount(ctx, *account)
	}
	switch args[0] {
	case "create":
		a, err := findAccount()
		if err != nil {
			return err
		}
		k, secret, err := ids.CreateKey(ctx, a.ID, "")
		if err != nil {
			return err
		}
		fmt.Printf("AccessKeyId: %s\nSecretAccessKey: %s\nAccount: %s (%s)\n", k.ID, secret, a.Name, a.ID)
	case "import":
		a, err := findAccount()
		if err != nil {
			return err
		}
		if len(pos) != 2 {
			return errors.New("usage: gantry keys import --account NAME KEY_ID SECRET")
		}
		k, err := ids.ImportKey(ctx, a.ID, pos[0], pos[1])
		if err != nil {
			return err
		}
		fmt.Printf("imported %s into account %s (%s)\n", k.ID, a.Name, a.ID)
	case "ls", "list":
		acct := ""
		if *account != "" {
			a, err := findAccount()
			if err != nil {
				return err
			}
			acct = a.ID
		}
		keys, err := ids.Keys(ctx, acct, nil)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ACCESS KEY ID\tACCOUNT\tUSER\tSTATUS\tCREATED")
		for _, k := range keys {
			user := k.User
			if user == "" {
				user = "(root)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.ID, k.Account, user, k.Status, k.Created.Format("2006-01-02 15:04:05"))
		}
		tw.Flush()
	case "revoke", "delete":
		if len(pos) != 1 {
			return errors.New("usage: gantry keys revoke KEY_ID")
		}
		if err := ids.RevokeKey(ctx, "", pos[0]); err != nil {
			return err
		}
		fmt.Printf("revoked %s\n", pos[0])
	default:
		return fmt.Errorf("unknown keys command %q\n%s", args[0], accountsUsage)
	}
	return nil
}

// accountEnv prints `gantry env` exports for an account's newest root key.
func accountEnv(ctx context.Context, idf identityFlags, account, endpoint, region string) error {
	ids, done, err := idf.open()
	if err != nil {
		return err
	}
	defer done()
	a, err := ids.FindAccount(ctx, account)
	if err != nil {
		return err
	}
	root := ""
	keys, err := ids.Keys(ctx, a.ID, &root)
	if err != nil {
		return err
	}
	if len(keys) == 0 {
		return fmt.Errorf("account %s has no root key: gantry keys create --account %s", a.Name, a.Name)
	}
	k := keys[len(keys)-1]
	secret, err := ids.Secret(&k)
	if err != nil {
		return err
	}
	printEnv(endpoint, k.ID, secret, region)
	return nil
}

func printEnv(endpoint, key, secret, region string) {
	fmt.Printf("export AWS_ENDPOINT_URL=%s\n", endpoint)
	fmt.Printf("export AWS_ACCESS_KEY_ID=%s\n", key)
	fmt.Printf("export AWS_SECRET_ACCESS_KEY=%s\n", secret)
	fmt.Printf("export AWS_DEFAULT_REGION=%s\n", region)
	fmt.Printf("export AWS_REGION=%s\n", region)
	fmt.Println("unset AWS_SESSION_TOKEN AWS_PROFILE")
}
