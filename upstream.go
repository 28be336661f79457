package main

// What this command does to read upstream flanneld's command lines and
// environment files as upstream does: its single-dash long flags, its
// Kubernetes-mode and klog flags (recognised, then refused or ignored, so
// the operator reads why instead of "unknown flag"), and a warning for a
// FLANNELD_* variable that names no flag.

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/flanneld-go/flannel/internal/suggest"
)

// normalizeArgs rewrites upstream's single-dash long flags
// (-etcd-prefix=/x, -iface eth0, -ip-masq) to the double-dash form: Go's
// flag package, which upstream uses, reads both; pflag reads -x as
// shorthand letters. Only names of long flags of root or its subcommands
// (and -help) are rewritten, so shorthands such as -h keep working; the
// value of a flag given as its own argument is never touched, nor is
// anything after "--".
func normalizeArgs(root *cobra.Command, args []string) []string {
	long, short := map[string]*pflag.Flag{}, map[string]bool{"h": true}
	var collect func(c *cobra.Command)
	collect = func(c *cobra.Command) {
		for _, fs := range []*pflag.FlagSet{c.Flags(), c.PersistentFlags()} {
			fs.VisitAll(func(fl *pflag.Flag) {
				long[fl.Name] = fl
				if fl.Shorthand != "" {
					short[fl.Shorthand] = true
				}
			})
		}
		for _, sub := range c.Commands() {
			collect(sub)
		}
	}
	collect(root)
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		body, single := strings.CutPrefix(a, "-")
		if double := strings.HasPrefix(body, "-"); double {
			body = body[1:]
			single = false
		}
		name, _, inline := strings.Cut(body, "=")
		fl := long[name]
		switch {
		case !strings.HasPrefix(a, "-") || name == "":
		case single && name == "help":
			a = "--help"
		case single && fl != nil && !(len(name) == 1 && short[name]):
			a = "-" + a
		}
		out = append(out, a)
		if fl != nil && !inline && fl.NoOptDefVal == "" && strings.HasPrefix(a, "--") && i+1 < len(args) {
			i++
			out = append(out, args[i]) // the flag's value, whatever it looks like
		}
	}
	return out
}

// kubeFlags are upstream's flags of its Kubernetes subnet manager. They
// are recognised, so that giving one (or its FLANNELD_* variable) says
// that this build has no such manager instead of "unknown flag".
var kubeFlags = []string{"kube-subnet-mgr", "kube-api-url", "kube-annotation-prefix", "kubeconfig-file", "set-node-network-unavailable"}

// klogFlags are the klog flags upstream takes over; they are accepted and
// ignored with a warning (the level is --log-level here).
var klogFlags = []string{"v", "vmodule", "log_backtrace_at"}

func addUpstreamOnlyFlags(fl *pflag.FlagSet) {
	fl.Bool("kube-subnet-mgr", false, "upstream's Kubernetes subnet manager: not in this build (refused)")
	fl.Bool("set-node-network-unavailable", true, "upstream's Kubernetes subnet manager: not in this build (refused)")
	for _, n := range []string{"kube-api-url", "kube-annotation-prefix", "kubeconfig-file"} {
		fl.String(n, "", "upstream's Kubernetes subnet manager: not in this build (refused)")
	}
	fl.String("v", "", "upstream's klog verbosity: ignored, use --log-level")
	fl.String("vmodule", "", "upstream's klog flag: ignored")
	fl.String("log_backtrace_at", "", "upstream's klog flag: ignored")
	for _, n := range append(slices.Clone(kubeFlags), klogFlags...) {
		_ = fl.MarkHidden(n)
	}
}

// checkUpstreamOnly refuses a Kubernetes-mode flag that was given (on the
// command line or in its variable), and returns a warning for each klog
// flag given.
func checkUpstreamOnly(fs *pflag.FlagSet) (warnings []string, err error) {
	for _, n := range kubeFlags {
		// --kube-subnet-mgr=false asks for what this build does.
		if fl := fs.Lookup(n); fl != nil && fl.Changed && !(n == "kube-subnet-mgr" && fl.Value.String() == "false") {
			return nil, fmt.Errorf("%s: upstream's Kubernetes subnet manager is not in this build, which runs the etcd subnet manager "+
				"(leases under --etcd-prefix in the etcd of --etcd-endpoints); remove the flag (and its %s variable) and give --etcd-endpoints, "+
				"or run upstream flanneld on this host", "--"+n, envName(n))
		}
	}
	for _, n := range klogFlags {
		if fl := fs.Lookup(n); fl != nil && fl.Changed {
			warnings = append(warnings, fmt.Sprintf("--%s=%s is upstream's klog flag and is ignored here; the log level is --log-level (debug, info, warn, error)", n, fl.Value))
		}
	}
	return warnings, nil
}

// envName is a flag's FLANNELD_* variable.
func envName(flag string) string {
	return "FLANNELD_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// envWarnings warns of each FLANNELD_* variable in environ that names no
// flag of root or its subcommands (a typo, or a variable of a flag this
// build lacks), naming the closest known variable. FLANNELD_VERSION is
// known: it is ignored on purpose, as upstream ignores it.
func envWarnings(root *cobra.Command, environ []string) []string {
	known := []string{"FLANNEL_UDP_OFFLOAD", "FLANNEL_UDP_LOG_PERIOD"} // not flags, but a typo may aim at them
	var collect func(c *cobra.Command)
	collect = func(c *cobra.Command) {
		for _, fs := range []*pflag.FlagSet{c.Flags(), c.PersistentFlags()} {
			fs.VisitAll(func(fl *pflag.Flag) {
				if n := envName(fl.Name); fl.Name != "help" && !slices.Contains(known, n) {
					known = append(known, n)
				}
			})
		}
		for _, sub := range c.Commands() {
			collect(sub)
		}
	}
	collect(root)
	var w []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "FLANNELD_") || slices.Contains(known, name) {
			continue
		}
		w = append(w, fmt.Sprintf("unknown variable %s is ignored; the closest known one is %s", name, suggest.Closest(name, known)))
	}
	slices.Sort(w)
	return w
}

// startupWarnings are the warnings of the environment and the flags, for
// the daemon's log (or standard error, for the other commands).
func startupWarnings(cmd *cobra.Command) ([]string, error) {
	w, err := checkUpstreamOnly(cmd.Flags())
	if err != nil {
		return nil, err
	}
	return append(envWarnings(cmd.Root(), os.Environ()), w...), nil
}
