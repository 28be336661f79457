package testbed

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

func TestOwner(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	if pid := liveOwner("flt00000"); pid != 0 {
		t.Errorf("no owner file: liveOwner = %d", pid)
	}
	if err := writeOwner("flt00000"); err != nil {
		t.Fatal(err)
	}
	if pid := liveOwner("flt00000"); pid != os.Getpid() {
		t.Errorf("liveOwner = %d, want this process %d", pid, os.Getpid())
	}
	// A pid whose process exited, and a live pid with another start time
	// (a reused pid), are not owners.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	st, _ := procStart(os.Getpid())
	for _, content := range []string{
		fmt.Sprintf("%d %d\n", dead.Process.Pid, st),
		fmt.Sprintf("%d %d\n", os.Getpid(), st+1),
		"garbage\n",
	} {
		if err := os.WriteFile(ownerPath("flt00000"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if pid := liveOwner("flt00000"); pid != 0 {
			t.Errorf("owner file %q: liveOwner = %d, want 0", content, pid)
		}
	}
}
