// Command testbed-clean removes what end-to-end testbeds left behind (a test
// binary killed on timeout cannot run its cleanups): every namespace named
// flt<5 hex digits>-<role>, the processes inside, and the default work
// directories. make e2e-clean runs it.
package main

import (
	"fmt"
	"os"

	"github.com/flanneld-go/flannel/e2e/testbed"
)

func main() {
	removed, err := testbed.CleanAll("flt")
	for _, r := range removed {
		fmt.Println("removed", r)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testbed-clean:", err)
		os.Exit(1)
	}
	if len(removed) == 0 {
		fmt.Println("nothing to remove")
	}
}
