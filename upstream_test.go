package main

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// parseUpstream runs the flag handling on an upstream-style command line:
// normalised as main does, then parsed (without running the daemon). It
// returns the command, what it wrote to standard output and error, and
// the parse error.
func parseUpstream(t *testing.T, env map[string]string, args ...string) (*cobra.Command, string, error) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	var out, errb bytes.Buffer
	cmd := newRootCmd(&out, &errb)
	cmd.RunE = func(*cobra.Command, []string) error { return nil }
	cmd.SetArgs(normalizeArgs(cmd, args))
	err := cmd.Execute()
	return cmd, out.String() + errb.String(), err
}

// TestUpstreamArgs: upstream's command lines (Go's flag package: one dash
// or two for a long flag) mean the same here; shorthands and values that
// look like flags are left alone.
func TestUpstreamArgs(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		want map[string]string // flag values after parsing
		out  string            // in what was printed
		err  string
	}{
		{name: "one dash with =", args: []string{"-etcd-prefix=/coreos.com/other"}, want: map[string]string{"etcd-prefix": "/coreos.com/other"}},
		{name: "one dash, value apart", args: []string{"-etcd-endpoints", "http://10.0.0.1:2379", "-iface", "eth0"},
			want: map[string]string{"etcd-endpoints": "[http://10.0.0.1:2379]", "iface": "[eth0]"}},
		{name: "bool", args: []string{"-ip-masq", "-iptables-forward-rules=false"}, want: map[string]string{"ip-masq": "true", "iptables-forward-rules": "false"}},
		{name: "repeated iface and regex", args: []string{"-iface=eth1", "--iface", "10.0.0.5", "-iface-regex", `^10\.1\.`, "-iface-regex=^bond"},
			want: map[string]string{"iface": "[eth1,10.0.0.5]", "iface-regex": `[^10\.1\.,^bond]`}},
		{name: "a value that looks like a flag", args: []string{"--etcd-prefix", "-ip-masq"}, want: map[string]string{"etcd-prefix": "-ip-masq", "ip-masq": "false"}},
		{name: "one-dash value of a one-dash flag", args: []string{"-etcd-prefix", "-iface"}, want: map[string]string{"etcd-prefix": "-iface", "iface": "[]"}},
		{name: "upstream's documented form", args: []string{"-etcd-endpoints=http://127.0.0.1:2379", "-etcd-prefix=/coreos.com/network", "-ip-masq=true"},
			want: map[string]string{"etcd-prefix": "/coreos.com/network", "ip-masq": "true"}},
		{name: "-h is help", args: []string{"-h"}, out: "Usage:"},
		{name: "-help is help", args: []string{"-help"}, out: "Usage:"},
		{name: "klog -v is ignored with a warning", args: []string{"-v=2"}, want: map[string]string{"v": "2"}},
		{name: "unknown one-dash flag", args: []string{"-etcd-prefx=/x"}, err: "unknown shorthand flag: 'e' in -etcd-prefx=/x"},
		{name: "unknown two-dash flag", args: []string{"--etcd-prefx=/x"}, err: "unknown flag: --etcd-prefx"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd, out, err := parseUpstream(t, nil, c.args...)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for name, want := range c.want {
				if got := flagValue(t, cmd, name); got != want {
					t.Errorf("--%s = %q, want %q", name, got, want)
				}
			}
			if !strings.Contains(out, c.out) {
				t.Errorf("printed %q, want it to contain %q", out, c.out)
			}
		})
	}
}

// TestNormalizeArgs: the rewriting itself, subcommands and "--" included.
func TestNormalizeArgs(t *testing.T) {
	root := newRootCmd(&bytes.Buffer{}, &bytes.Buffer{})
	for _, c := range []struct{ in, want []string }{
		{[]string{"leases", "-etcd-endpoints", "-x"}, []string{"leases", "--etcd-endpoints", "-x"}},
		{[]string{"cleanup", "-subnet-file=/run/x", "-iface", "eth0"}, []string{"cleanup", "--subnet-file=/run/x", "--iface", "eth0"}},
		{[]string{"config", "check", "-"}, []string{"config", "check", "-"}},
		{[]string{"-ip-masq", "--", "-iface"}, []string{"--ip-masq", "--", "-iface"}},
		{[]string{"-h", "-x", "-nosuch=1", "--version"}, []string{"-h", "-x", "-nosuch=1", "--version"}},
		{[]string{"-v", "2", "-vmodule=x=2"}, []string{"--v", "2", "--vmodule=x=2"}},
	} {
		if got := normalizeArgs(root, c.in); !slices.Equal(got, c.want) {
			t.Errorf("normalizeArgs(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// FuzzNormalizeArgs: the rewriting only ever adds a dash to an argument,
// keeps their number and order, and leaves everything after "--" alone.
func FuzzNormalizeArgs(f *testing.F) {
	for _, s := range []string{"-etcd-prefix=/x -iface eth0", "-h", "--etcd-prefix -ip-masq", "-ip-masq -- -iface", "leases -etcd-endpoints x", "- -- --"} {
		f.Add(s)
	}
	root := newRootCmd(&bytes.Buffer{}, &bytes.Buffer{})
	f.Fuzz(func(t *testing.T, line string) {
		in := strings.Fields(line)
		out := normalizeArgs(root, in)
		if len(out) != len(in) {
			t.Fatalf("%q -> %q: the number of arguments changed", in, out)
		}
		rest := false
		for i := range in {
			if rest && out[i] != in[i] {
				t.Fatalf("%q -> %q: argument %d after -- changed", in, out, i)
			}
			if out[i] != in[i] && out[i] != "-"+in[i] && !(in[i] == "-help" && out[i] == "--help") {
				t.Fatalf("%q -> %q: argument %d rewritten beyond a dash", in, out, i)
			}
			rest = rest || in[i] == "--"
		}
	})
}

// TestKubernetesFlagsRefused: upstream's Kubernetes-mode flags, on the
// command line or in their variables, stop the daemon with a message
// that says which subnet manager this build runs.
func TestKubernetesFlagsRefused(t *testing.T) {
	for _, c := range []struct {
		name string
		env  map[string]string
		args []string
		err  string // "" when accepted
	}{
		{name: "flag", args: []string{"--kube-subnet-mgr"}, err: "--kube-subnet-mgr: upstream's Kubernetes subnet manager is not in this build, which runs the etcd subnet manager"},
		{name: "one-dash flag", args: []string{"-kube-subnet-mgr=true"}, err: "remove the flag (and its FLANNELD_KUBE_SUBNET_MGR variable)"},
		{name: "variable", env: map[string]string{"FLANNELD_KUBE_SUBNET_MGR": "true"}, err: "--kube-subnet-mgr: upstream's Kubernetes subnet manager is not in this build"},
		{name: "kubeconfig", args: []string{"--kubeconfig-file=/etc/kubernetes/admin.conf"}, err: "--kubeconfig-file: upstream's Kubernetes subnet manager"},
		{name: "api url variable", env: map[string]string{"FLANNELD_KUBE_API_URL": "https://10.0.0.1:6443"}, err: "FLANNELD_KUBE_API_URL"},
		{name: "annotation prefix", args: []string{"-kube-annotation-prefix", "x.io"}, err: "--kube-annotation-prefix:"},
		{name: "node network flag", args: []string{"--set-node-network-unavailable=false"}, err: "--set-node-network-unavailable:"},
		{name: "explicitly off", args: []string{"--kube-subnet-mgr=false"}},
		{name: "explicitly off in the variable", env: map[string]string{"FLANNELD_KUBE_SUBNET_MGR": "false"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := parseUpstream(t, c.env, c.args...)
			if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
				t.Fatalf("error %v, want %q", err, c.err)
			}
		})
	}
}

// TestEnvWarnings: each FLANNELD_* variable that names no flag gets one
// warning line naming the closest known variable; known ones get none.
func TestEnvWarnings(t *testing.T) {
	root := newRootCmd(&bytes.Buffer{}, &bytes.Buffer{})
	got := envWarnings(root, []string{
		"FLANNELD_IFAEC=eth0", "FLANNELD_IFACE=eth0", "FLANNELD_UDP_OFFLOAD=off", "FLANNELD_VERSION=true",
		"FLANNELD_ETCD_ENDPOINT=http://x", "FLANNELD_KUBE_SUBNET_MGR=true", "FLANNEL_UDP_LOG_PERIOD=1s", "PATH=/bin",
		"FLANNELD_NET_CONF_PATH=/etc/x",
	})
	want := []string{
		"unknown variable FLANNELD_ETCD_ENDPOINT is ignored; the closest known one is FLANNELD_ETCD_ENDPOINTS",
		"unknown variable FLANNELD_IFAEC is ignored; the closest known one is FLANNELD_IFACE",
		"unknown variable FLANNELD_NET_CONF_PATH is ignored; the closest known one is FLANNELD_NET_CONFIG_PATH",
		"unknown variable FLANNELD_UDP_OFFLOAD is ignored; the closest known one is FLANNEL_UDP_OFFLOAD",
	}
	if !slices.Equal(got, want) {
		t.Errorf("warnings\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The other commands print them on standard error.
	t.Setenv("FLANNELD_IFAEC", "eth0")
	_, errOut, err := run(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, "config", "check", "-")
	if err != nil || !strings.Contains(errOut, "warning: unknown variable FLANNELD_IFAEC is ignored; the closest known one is FLANNELD_IFACE\n") {
		t.Errorf("config check: %v, stderr %q", err, errOut)
	}
}

// TestConfigCheckUpstreamReading: config check says which default a
// net-conf without Backend takes, lower-cases the type, and warns of
// options it ignores.
func TestConfigCheckUpstreamReading(t *testing.T) {
	for _, c := range []struct {
		doc, typ string
		warn     []string
	}{
		{`{"Network":"10.244.0.0/16"}`, `"Type": "udp"`, []string{`warning: Backend is not set: using the udp backend, upstream flanneld's default; to choose another, set "Backend": {"Type": "vxlan"} (or "host-gw")`}},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"VXLAN","MacPrefix":"0E-2A"}}`, `"Type": "vxlan"`,
			[]string{"warning: Backend.MacPrefix: an option of upstream's Windows nodes; ignored here"}},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Prot":1}}`, `"Port": 8285`,
			[]string{`warning: Backend.Prot: unknown udp option, ignored; the closest known option is "Port"`}},
	} {
		out, errOut, err := run(t, c.doc, "config", "check", "--this-host=false", "--compare-stored=false", "-")
		if err != nil || !strings.Contains(out, c.typ) {
			t.Errorf("%s: %v\n%s", c.doc, err, out)
		}
		if got := strings.Split(strings.TrimSpace(errOut), "\n"); !slices.Equal(got, c.warn) {
			t.Errorf("%s: warnings %q, want %q", c.doc, got, c.warn)
		}
	}
}

// TestKlogFlagsWarn: upstream's klog flags are accepted with one warning
// each, which the daemon logs.
func TestKlogFlagsWarn(t *testing.T) {
	cmd, _, err := parseUpstream(t, nil, "-v=2", "-vmodule", "main=4")
	if err != nil {
		t.Fatal(err)
	}
	w, err := checkUpstreamOnly(cmd.Flags())
	want := []string{
		"--v=2 is upstream's klog flag and is ignored here; the log level is --log-level (debug, info, warn, error)",
		"--vmodule=main=4 is upstream's klog flag and is ignored here; the log level is --log-level (debug, info, warn, error)",
	}
	if err != nil || !slices.Equal(w, want) {
		t.Errorf("%q %v, want %q", w, err, want)
	}
}
