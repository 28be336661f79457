package firewall

import (
	"log/slog"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/flanneld-go/flannel/internal/netnstest"
)

func nftCmd(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("nft", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("nft %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// resetNFT empties this namespace's ruleset now and when t ends.
func resetNFT(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not installed (Debian package nftables; make deps installs it)")
	}
	nftCmd(t, "flush", "ruleset")
	t.Cleanup(func() { nftCmd(t, "flush", "ruleset") })
}

func newKernelNFT(t *testing.T) (*Firewall, *syncBuffer) {
	t.Helper()
	buf := &syncBuffer{}
	f, err := New(slog.New(slog.NewTextHandler(buf, nil)), NFTables)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("firewall log:\n%s", buf)
		}
	})
	return f, buf
}

var nftHandleRE = regexp.MustCompile(`(?m)ip saddr 10\.244\.0\.0/16 ip daddr != 224\.0\.0\.0/4 .* # handle (\d+)$`)

// TestNFTKernel runs the nftables mode against the kernel of a private
// namespace: what nft lists back equals what we wrote (no alias learned),
// hand edits are repaired, and Remove leaves no table of ours.
func TestNFTKernel(t *testing.T) {
	netnstest.Require(t)
	resetNFT(t)
	f, buf := newKernelNFT(t)
	m := f.impl.(*nftMode)
	if !m.randomFully {
		t.Error("nft --check refused masquerade fully-random on this kernel")
	}
	mustEnsureNFT(t, f, fwCfgNFT, true)
	mustEnsureNFT(t, f, fwCfgNFT, false)
	if len(m.alias) > 0 {
		t.Errorf("aliases learned, the JSON printer does not match this nft: %v", m.alias)
	}
	want := nftCmd(t, "list", "ruleset")
	for _, w := range []string{"table ip flannel-ipv4", "table ip6 flannel-ipv6", "masquerade fully-random"} {
		if !strings.Contains(want, w) {
			t.Errorf("ruleset lacks %q:\n%s", w, want)
		}
	}

	m4 := nftHandleRE.FindStringSubmatch(nftCmd(t, "-a", "list", "chain", "ip", nftTableV4, nftMasqChain))
	if m4 == nil {
		t.Fatal("no handle for the masquerade rule")
	}
	nftCmd(t, "delete", "rule", "ip", nftTableV4, nftMasqChain, "handle", m4[1])
	nftCmd(t, "delete", "chain", "ip6", nftTableV6, nftFwdChain)
	why := mustEnsureNFT(t, f, fwCfgNFT, true)
	if len(why) != 2 {
		t.Errorf("repairs %q, want one per table", why)
	}
	if got := nftCmd(t, "list", "ruleset"); got != want {
		t.Errorf("after the repair:\n%s\nwant:\n%s", got, want)
	}

	// Upstream's layout (IPv4 only) is replaced, not doubled.
	nftCmd(t, "flush", "ruleset")
	nftCmd(t, "-f", "testdata/upstream-v4.nft")
	mustEnsureNFT(t, f, fwCfgNFTv4, true)
	got := nftCmd(t, "list", "ruleset")
	if n := strings.Count(got, "chain postrtg"); n != 1 || strings.Contains(got, "flannel-ipv6") || !strings.Contains(got, "kube-proxy masquerades") {
		t.Errorf("after adopting upstream's tables:\n%s", got)
	}

	removed, err := f.Remove()
	if err != nil || len(removed) != 1 {
		t.Errorf("Remove() = %q, %v; want the IPv4 table", removed, err)
	}
	if got := nftCmd(t, "list", "tables"); strings.Contains(got, "flannel") {
		t.Errorf("tables left after Remove:\n%s", got)
	}
	if strings.Contains(buf.String(), "level=WARN") {
		t.Errorf("warnings logged:\n%s", buf)
	}
}

// TestRemoveOthers: starting in one mode removes the other mode's rules.
func TestRemoveOthers(t *testing.T) {
	netnstest.Require(t)
	resetNFT(t)
	resetIPTables(t, nftBackend)
	ipt, _ := newTestFirewall(t, nftBackend)
	mustEnsure(t, ipt, fwCfgDual, true)
	nf, _ := newKernelNFT(t)
	mustEnsureNFT(t, nf, fwCfgNFT, true)

	removed, err := RemoveOthers(slog.New(slog.DiscardHandler), NFTables)
	if err != nil || len(removed) != 4 || !strings.HasPrefix(removed[0], "iptables chain IPv4 nat/FLANNEL-POSTRTG") {
		t.Errorf("RemoveOthers(keep nftables) = %q, %v; want the four FLANNEL-* chains", removed, err)
	}
	got := nftCmd(t, "list", "ruleset")
	if strings.Contains(got, "FLANNEL") || !strings.Contains(got, "table ip flannel-ipv4") {
		t.Errorf("after RemoveOthers(keep nftables):\n%s", got)
	}
	mustEnsureNFT(t, nf, fwCfgNFT, false) // ours untouched

	mustEnsure(t, ipt, fwCfgDual, true)
	removed, err = RemoveOthers(slog.New(slog.DiscardHandler), IPTables)
	if err != nil || len(removed) != 2 {
		t.Errorf("RemoveOthers(keep iptables) = %q, %v; want both tables", removed, err)
	}
	got = nftCmd(t, "list", "ruleset")
	if strings.Contains(got, "flannel-ip") || !strings.Contains(got, "FLANNEL-POSTRTG") {
		t.Errorf("after RemoveOthers(keep iptables):\n%s", got)
	}
	if removed, err := RemoveAll(nil); err != nil || len(removed) != 4 {
		t.Errorf("RemoveAll() = %q, %v; want the four chains", removed, err)
	}
}
