// The Go binding's side of the C API overhead benchmark (tests/bench/capi_overhead.rs): the
// protocol of capi_bench.c through the vene package (Request, Run, Result.Tensor, which
// copies the logits into Go memory, Close).
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	vene "github.com/vene-project/vene/bindings/go"
)

// cpuTime is the process's user + system CPU time (every thread, the Go runtime's too).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func ids(s string) []int32 {
	var out []int32
	for _, f := range strings.Split(s, ",") {
		v, _ := strconv.Atoi(f)
		out = append(out, int32(v))
	}
	return out
}

func main() {
	if len(os.Args) != 7 {
		fmt.Fprintln(os.Stderr, "usage: capi_go <model> <config> <all|last> <base> <source> <pos>")
		os.Exit(2)
	}
	m, err := vene.LoadModel(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	iv, err := vene.NewIntervenable(m, os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	logits := vene.LogitsAll
	if os.Args[3] == "last" {
		logits = vene.LogitsLast
	}
	base, src := ids(os.Args[4]), ids(os.Args[5])
	pos, _ := strconv.ParseInt(os.Args[6], 10, 64)
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	sink := float32(0)
	for in.Scan() && strings.HasPrefix(in.Text(), "run") {
		t0, c0 := time.Now(), cpuTime()
		r, err := iv.Run(&vene.Request{
			Base:      vene.Tokens(base...),
			Sources:   []*vene.Input{vene.Tokens(src...)},
			Locations: []vene.Location{vene.At(pos)},
			Logits:    logits,
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		t, err := r.Tensor("intervened.logits")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		sink += t.Data[0]
		r.Close()
		fmt.Printf("%.1f %.1f\n", float64(time.Since(t0).Nanoseconds())/1e3, float64((cpuTime()-c0).Nanoseconds())/1e3)
	}
	iv.Close()
	m.Close()
	if sink == 12345.678 {
		os.Exit(3)
	}
}
