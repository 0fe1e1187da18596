package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/smithy-go"
	"golang.org/x/term"

	"github.com/gantry-dev/gantry/internal/execstream"
)

const execUsage = `Usage: gantry exec [flags] [CLUSTER] TASK [flags] -- COMMAND [ARG...]

Runs COMMAND in a container of a running task, as 'aws ecs execute-command'
does: ECS ExecuteCommand (signed with $AWS_ACCESS_KEY_ID etc., as 'gantry
env' prints them), then the session's stream. The task must have been run
with --enable-execute-command. The command's exit code is gantry's; API
errors exit 255.

  -i   keep stdin open and send it to the command
  -t   give the command a terminal (raw mode here, window size forwarded)

Flags:
`

// runExec is `gantry exec`; it returns the process's exit code.
func runExec(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("exec", flag.ContinueOnError)
	cluster := fs.String("cluster", "", "the task's cluster (default: the default cluster)")
	container := fs.String("container", "", "the container, when the task has several")
	interactive := fs.Bool("i", false, "keep stdin open and send it to the command")
	tty := fs.Bool("t", false, "allocate a terminal")
	client := clientFlags(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), execUsage)
		fs.PrintDefaults()
	}
	var cmd []string
	for i, a := range args {
		if a == "--" {
			args, cmd = args[:i], args[i+1:]
			break
		}
	}
	// Flags may come before and after the positional arguments.
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	switch {
	case len(pos) == 2 && *cluster == "":
		*cluster = pos[0]
		pos = pos[1:]
	case len(pos) != 1:
		fs.Usage()
		return 2
	}
	if len(cmd) == 0 {
		fmt.Fprintln(os.Stderr, "gantry exec: no command (put it after --)")
		return 2
	}
	c, err := client()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gantry exec:", err)
		return 1
	}
	api := ecs.NewFromConfig(aws.Config{
		Region:       c.region,
		Credentials:  credentials.NewStaticCredentialsProvider(c.creds.AccessKeyID, c.creds.SecretAccessKey, c.creds.SessionToken),
		BaseEndpoint: aws.String(c.endpoint),
	})
	in := &ecs.ExecuteCommandInput{
		Task:        aws.String(pos[0]),
		Command:     aws.String(execstream.JoinCommand(cmd)),
		Interactive: true,
	}
	if *cluster != "" {
		in.Cluster = cluster
	}
	if *container != "" {
		in.Container = container
	}
	out, err := api.ExecuteCommand(ctx, in)
	if err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) {
			fmt.Fprintf(os.Stderr, "An error occurred (%s) when calling the ExecuteCommand operation: %s\n", ae.ErrorCode(), ae.ErrorMessage())
		} else {
			fmt.Fprintln(os.Stderr, "gantry exec:", err)
		}
		return 255
	}
	if out.Session == nil {
		fmt.Fprintln(os.Stderr, "gantry exec: ExecuteCommand returned no session")
		return 255
	}

	o := execstream.Options{TTY: *tty, Stdout: os.Stdout, Stderr: os.Stderr}
	if *interactive {
		o.Stdin = os.Stdin
	}
	if *tty {
		fd := int(os.Stdin.Fd())
		if term.IsTerminal(fd) {
			if st, err := term.MakeRaw(fd); err == nil {
				defer term.Restore(fd, st)
			}
			if w, h, err := term.GetSize(fd); err == nil {
				o.Size = execstream.Size{Cols: uint16(w), Rows: uint16(h)}
			}
			resize := make(chan execstream.Size, 1)
			winch := make(chan os.Signal, 1)
			signal.Notify(winch, syscall.SIGWINCH)
			defer signal.Stop(winch)
			go func() {
				for range winch {
					if w, h, err := term.GetSize(fd); err == nil {
						select {
						case <-resize:
						default:
						}
						resize <- execstream.Size{Cols: uint16(w), Rows: uint16(h)}
					}
				}
			}()
			o.Resize = resize
		}
	}
	err = execstream.Attach(ctx, aws.ToString(out.Session.StreamUrl), aws.ToString(out.Session.TokenValue), o)
	var ee *execstream.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ee.Message != "" {
			fmt.Fprintln(os.Stderr, "gantry exec:", ee.Message)
		}
		if ee.Code > 0 {
			return ee.Code
		}
		return 1
	default:
		fmt.Fprintln(os.Stderr, "gantry exec:", err)
		return 1
	}
}
