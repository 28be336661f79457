package network

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/flanneld-go/flannel/subnet"
)

func TestSubnetEnvWriteReadDualStack(t *testing.T) {
	cfg, _, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56"}`))
	if err != nil {
		t.Fatal(err)
	}
	l := subnet.Lease{Subnet: netip.MustParsePrefix("10.244.3.0/24"), IPv6Subnet: netip.MustParsePrefix("fd00:10:244:3::/64")}
	env := EnvFor(cfg, l, 1450, true)
	path := filepath.Join(t.TempDir(), "run", "flannel", "subnet.env")
	if err := WriteSubnetEnv(path, env); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	want := "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:3::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
	if string(data) != want {
		t.Errorf("file:\n%s\nwant:\n%s", data, want)
	}
	back, err := ReadSubnetEnv(path)
	if err != nil || back != env {
		t.Fatalf("read back %+v %v", back, err)
	}
	if h := back.Hint(); h.Subnet != l.Subnet || h.IPv6Subnet != l.IPv6Subnet {
		t.Errorf("hint %+v", h)
	}
	// No temporary files are left beside it.
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only subnet.env", len(entries))
	}
}

func TestSubnetEnvV4Only(t *testing.T) {
	cfg, _, _ := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16"}`))
	env := EnvFor(cfg, subnet.Lease{Subnet: netip.MustParsePrefix("10.244.3.0/24")}, 1500, false)
	want := "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n"
	if got := string(env.Bytes()); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if _, err := ParseSubnetEnv([]byte("FLANNEL_SUBNET=garbage\n")); err == nil {
		t.Error("garbage accepted")
	}
}
