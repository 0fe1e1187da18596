// Command ptraceprobe does what `strace -p` or a debugger does first:
// PTRACE_ATTACH to a running process, here one of another user (so only
// CAP_SYS_PTRACE allows it), reads its registers and detaches. It reports
// through its exit code, which DescribeTasks shows, the sum of:
//
//	1  CAP_SYS_PTRACE is in its effective set (/proc/self/status CapEff)
//	2  the attach worked
//	4  CAP_CHOWN is in its effective set (to see a dropped capability)
//
// It prints what it found on stdout. Built static for the test images.
package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

const (
	capChown     = 0
	capSysPtrace = 19
)

func main() {
	code := 0
	eff := capEff()
	if eff&(1<<capSysPtrace) != 0 {
		code |= 1
	}
	if eff&(1<<capChown) != 0 {
		code |= 4
	}
	fmt.Printf("CapEff %016x\n", eff)

	target := exec.Command("sleep", "30")
	target.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if err := target.Start(); err != nil {
		fmt.Println("start a process as uid 65534:", err)
		os.Exit(code | 64)
	}
	defer target.Process.Kill()
	pid := target.Process.Pid

	// ptrace requests must come from the thread that attached.
	runtime.LockOSThread()
	if err := syscall.PtraceAttach(pid); err != nil {
		fmt.Println("ptrace attach:", err)
		os.Exit(code)
	}
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, syscall.WALL, nil); err != nil || !ws.Stopped() {
		fmt.Println("wait for the attached process:", err, ws)
		os.Exit(code | 64)
	}
	var regs syscall.PtraceRegs
	if err := syscall.PtraceGetRegs(pid, &regs); err != nil {
		fmt.Println("ptrace getregs:", err)
		os.Exit(code | 64)
	}
	syscall.PtraceDetach(pid)
	fmt.Printf("ptrace attach: ok (pc %#x)\n", regs.PC())
	os.Exit(code | 2)
}

func capEff() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		fmt.Println(err)
		os.Exit(64)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err == nil {
				return n
			}
		}
	}
	fmt.Println("no CapEff in /proc/self/status")
	os.Exit(64)
	return 0
}
