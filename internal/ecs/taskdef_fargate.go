package ecs

import (
	"math"
	"regexp"
	"strconv"
	"strings"
)

// fargateSizes is AWS's table of Fargate task sizes: for each task cpu (in
// CPU units) the memory range in MiB and its step.
var fargateSizes = map[int]struct{ min, max, step int }{
	256:   {512, 2048, 0}, // 512, 1024, 2048: not evenly stepped
	512:   {1024, 4096, 1024},
	1024:  {2048, 8192, 1024},
	2048:  {4096, 16384, 1024},
	4096:  {8192, 30720, 1024},
	8192:  {16384, 61440, 4096},
	16384: {32768, 122880, 8192},
}

// fargateSizeValid reports whether cpu units and memory MiB form a Fargate
// task size.
func fargateSizeValid(cpu, mem int) bool {
	r, ok := fargateSizes[cpu]
	if !ok || mem < r.min || mem > r.max {
		return false
	}
	if r.step == 0 {
		return mem == 512 || mem == 1024 || mem == 2048
	}
	return (mem-r.min)%r.step == 0
}

var unitRe = regexp.MustCompile(`(?i)^\s*([0-9]+(?:\.[0-9]+)?)\s*(vcpu|gb)?\s*$`)

// parseUnits reads a task-level cpu or memory string the ways AWS accepts it:
// "1024", or "1 vCPU" (cpu) / "2 GB" (memory), which scale by 1024. unit is
// "vcpu" or "gb". ok is false for anything else, or a value that is not a
// whole number of units once scaled.
func parseUnits(s, unit string) (int, bool) {
	m := unitRe.FindStringSubmatch(s)
	if m == nil {
		return 0, false
	}
	if m[2] != "" && !strings.EqualFold(m[2], unit) {
		return 0, false
	}
	f, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return 0, false
	}
	if m[2] != "" {
		f *= 1024
	}
	if f != math.Trunc(f) || f <= 0 || f > math.MaxInt32 {
		return 0, false
	}
	return int(f), true
}
