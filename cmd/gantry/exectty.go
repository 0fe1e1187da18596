// `gantry exec-tty` (hidden) runs an ECS Exec command on a terminal
// allocated inside the container, for sandboxed (gVisor) tasks.
//
// Under gVisor a terminal handed in from the host (runsc exec with a
// console) works as a terminal but is not a file of the sandbox's devpts, so
// ttyname() fails and `tty` says "not a tty" (google/gvisor#13535). The
// agent bind-mounts the (static) gantry binary into sandboxed containers and runs
// the exec session's command through it, without a host terminal: it opens
// a pseudo-terminal from the container's own /dev/ptmx, starts the command
// as a session leader on it, and relays between the pty and its own stdio.
// The AWS Fargate equivalent is the SSM agent's session worker, which also
// allocates the pty inside the task.
//
//	gantry exec-tty v1 ROWS COLS CMD [ARG...]
//
// stdin is framed (package internal/execstream/ttyframe): data frames for the
// terminal's input and window-size frames for resizes, so both travel on
// the one pipe the runtime gives an exec'd process. stdout is the terminal's
// output. The exit code is the command's (128+n when a signal killed it,
// 127/126 when it cannot be run, as a shell reports them).
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gantry-dev/gantry/internal/execstream/ttyframe"
)

// execTTYCommand must match the agent's local.ExecTTYCommand.
const execTTYCommand = "exec-tty"

func runExecTTY(args []string) int {
	if len(args) < 4 || args[0] != ttyframe.Version {
		fmt.Fprintln(os.Stderr, "usage: gantry exec-tty "+ttyframe.Version+" ROWS COLS CMD [ARG...]")
		return 126
	}
	rows, err1 := strconv.ParseUint(args[1], 10, 16)
	cols, err2 := strconv.ParseUint(args[2], 10, 16)
	if err1 != nil || err2 != nil {
		fmt.Fprintf(os.Stderr, "gantry exec-tty: bad window size %q x %q\n", args[1], args[2])
		return 126
	}
	argv := args[3:]

	master, replica, err := openPTY()
	if err != nil {
		fmt.Fprintf(os.Stderr, "gantry exec-tty: cannot allocate a terminal in the container: %v\n", err)
		return 126
	}
	if rows > 0 && cols > 0 {
		setSize(master, uint16(rows), uint16(cols))
	}

	path, err := exec.LookPath(argv[0])
	if err != nil {
		replica.Close()
		master.Close()
		return notRunnable(argv[0], err)
	}
	cmd := exec.Command(path, argv[1:]...)
	cmd.Args[0] = argv[0]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = replica, replica, replica
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// A session of its own with the pty as its controlling terminal:
		// job control, ^C and ^Z work as on a login terminal.
		Setsid:  true,
		Setctty: true,
		Ctty:    0,
		// This process killed (the client went away) hangs the terminal up.
		Pdeathsig: syscall.SIGHUP,
	}
	if err := cmd.Start(); err != nil {
		replica.Close()
		master.Close()
		return notRunnable(argv[0], err)
	}
	// Only the command holds the replica now: when it and whatever it
	// started have all closed it, reads from the master end (EIO).
	replica.Close()

	// Signals meant for the session (the runtime's kill of this process)
	// go to the command's process group, as a terminal's would.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT)
	go func() {
		for s := range sigs {
			syscall.Kill(-cmd.Process.Pid, s.(syscall.Signal))
		}
	}()

	go relayInput(os.Stdin, master)
	outDone := make(chan struct{})
	go func() {
		io.Copy(os.Stdout, master)
		close(outDone)
	}()

	err = cmd.Wait()
	// The session leader gone, the terminal is hung up and the output
	// drains to EIO; a background job holding it open does not keep the
	// exit waiting for long.
	select {
	case <-outDone:
	case <-time.After(2 * time.Second):
	}
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	fmt.Fprintf(os.Stderr, "gantry exec-tty: %v\n", err)
	return 126
}

// notRunnable reports a command that cannot start as a shell does: 127 when
// it is not there, 126 otherwise.
func notRunnable(name string, err error) int {
	if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(os.Stderr, "exec %q: executable file not found\n", name)
		return 127
	}
	fmt.Fprintf(os.Stderr, "exec %q: %v\n", name, err)
	return 126
}

// openPTY opens a pseudo-terminal pair from the container's devpts, so its
// replica is /dev/pts/N inside the container.
func openPTY() (master, replica *os.File, err error) {
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(mfd)
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	n, err := unix.IoctlGetUint32(mfd, unix.TIOCGPTN)
	if err != nil {
		unix.Close(mfd)
		return nil, nil, fmt.Errorf("pty number: %w", err)
	}
	name := "/dev/pts/" + strconv.FormatUint(uint64(n), 10)
	rfd, err := unix.Open(name, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(mfd)
		return nil, nil, fmt.Errorf("open %s: %w", name, err)
	}
	return os.NewFile(uintptr(mfd), "/dev/ptmx"), os.NewFile(uintptr(rfd), name), nil
}

func setSize(master *os.File, rows, cols uint16) {
	unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
}

// relayInput decodes the agent's frames: input goes to the terminal,
// window sizes to the pty (which signals SIGWINCH to the foreground job).
// stdin's end stops input only: the command keeps running, as with a
// terminal whose keyboard went quiet.
func relayInput(in io.Reader, master *os.File) {
	r := ttyframe.NewReader(in)
	for {
		f, err := r.Next()
		if err != nil {
			return
		}
		switch {
		case f.Resize != nil:
			setSize(master, f.Resize.Rows, f.Resize.Cols)
		case len(f.Data) > 0:
			if _, err := master.Write(f.Data); err != nil {
				return
			}
		}
	}
}
