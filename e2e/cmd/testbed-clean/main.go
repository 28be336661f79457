// Command testbed-clean removes what end-to-end testbeds left behind (a test
// binary killed on timeout cannot run its cleanups): every namespace named
// flt<5 hex digits>-<role>, the processes inside, the default work
// directories and owner files. Testbeds whose owning process still runs
// (another test run on the machine) are kept unless -all is given. make
// e2e-clean runs it.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/flanneld-go/flannel/e2e/testbed"
)

func main() {
	all := flag.Bool("all", false, "also remove testbeds whose owning process is still running")
	flag.Parse()
	removed, kept, err := testbed.CleanAll("flt", *all)
	for _, r := range removed {
		fmt.Println("removed", r)
	}
	for _, k := range kept {
		fmt.Println("kept", k, "(-all removes it too)")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testbed-clean:", err)
		os.Exit(1)
	}
	if len(removed) == 0 && len(kept) == 0 {
		fmt.Println("nothing to remove")
	}
}
