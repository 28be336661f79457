// Command flanneld is the per-host daemon of the overlay network: it leases
// a subnet for this host from etcd, programs the data plane to reach every
// other host's subnet, and writes subnet.env for the flannel CNI plugin.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/flanneld-go/flannel/backend/udp"
	"github.com/flanneld-go/flannel/internal/memlimit"
	"github.com/flanneld-go/flannel/network"
	"github.com/flanneld-go/flannel/subnet/etcd"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type flags struct {
	etcd           etcd.Config
	iface          network.IfaceOptions
	hostID         string
	subnetFile     string
	renewMargin    int
	leaseTTL       time.Duration
	ipMasq         bool
	noRandomFully  bool
	iptablesResync int
	forwardRules   bool
	blackholeRoute bool
	netConfPath    string
	reconcile      time.Duration
	healthzIP      string
	healthzPort    int
	logLevel       string
	showVersion    bool
	// warnings about the environment and flags, logged by the daemon
	// (printed by the other commands).
	warnings []string
}

func main() {
	cmd := newRootCmd(os.Stdout, os.Stderr)
	cmd.SetArgs(normalizeArgs(cmd, os.Args[1:]))
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "flanneld:", err)
		os.Exit(1)
	}
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	var f flags
	root := &cobra.Command{
		Use:           "flanneld",
		Short:         "Overlay network daemon: leases this host's subnet from etcd and routes to every other host's",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			var err error
			if f.warnings, err = startupWarnings(cmd); err != nil {
				return err
			}
			if cmd != cmd.Root() {
				for _, w := range f.warnings {
					fmt.Fprintln(stderr, "warning:", w)
				}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.showVersion {
				fmt.Fprintln(stdout, version)
				return nil
			}
			return runDaemon(cmd.Context(), f, stderr)
		},
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetOut(stdout)
	root.SetErr(stderr)
	addEtcdFlags(root.PersistentFlags(), &f)
	addHostFlags(root.PersistentFlags(), &f)
	addDaemonFlags(root.Flags(), &f)

	root.AddCommand(
		&cobra.Command{
			Use:   "version",
			Short: "Print the version",
			Args:  cobra.NoArgs,
			Run:   func(*cobra.Command, []string) { fmt.Fprintln(stdout, version) },
		},
		newConfigCmd(stdout, stderr, &f),
		newLeasesCmd(stdout, &f),
		newCleanupCmd(stdout, &f),
	)
	return root
}

// addHostFlags adds the interface and file flags, which the cleanup
// subcommand shares with the daemon.
func addHostFlags(fl *pflag.FlagSet, f *flags) {
	fl.StringSliceVar(&f.iface.Iface, "iface", nil, "interface (name or address) for inter-host traffic; repeatable, tried in order")
	fl.StringArrayVar(&f.iface.IfaceRegex, "iface-regex", nil, "regexp matched against interface addresses, then names; repeatable, tried in order after every --iface")
	fl.StringVar(&f.iface.CanReach, "iface-can-reach", "", "use the interface the kernel routes this address through")
	fl.StringVar(&f.iface.PublicIP, "public-ip", "", "IPv4 address advertised to other hosts (default: the interface's address)")
	fl.StringVar(&f.iface.PublicIPv6, "public-ipv6", "", "IPv6 address advertised to other hosts (default: the interface's global IPv6 address)")
	fl.StringVar(&f.subnetFile, "subnet-file", "/run/flannel/subnet.env", "file the subnet variables are written to")
	fl.StringVar(&f.hostID, "host-id", "", "this host's identity in its lease (default: derived from /etc/machine-id and the external interface's MAC address)")
}

// addDaemonFlags adds the daemon's own flags, upstream's flags this build
// recognises only to refuse or ignore them included.
func addDaemonFlags(fl *pflag.FlagSet, f *flags) {
	fl.IntVar(&f.renewMargin, "subnet-lease-renew-margin", 60, "renew the lease this many minutes before it expires (1..1439)")
	fl.DurationVar(&f.leaseTTL, "subnet-lease-ttl", etcd.DefaultTTL, "life of a subnet lease (testing only; keep the default in production)")
	fl.BoolVar(&f.ipMasq, "ip-masq", false, "masquerade traffic from pods to destinations outside the network")
	fl.BoolVar(&f.noRandomFully, "ip-masq-fully-random-disable", false, "leave --random-fully out of the masquerade rules")
	fl.BoolVar(&f.blackholeRoute, "ip-blackhole-route", false, "keep a blackhole route for this host's subnet (for CNI set-ups without a bridge)")
	fl.StringVar(&f.netConfPath, "net-config-path", "", "read the net-conf from this file instead of etcd (default: from etcd)")
	fl.IntVar(&f.iptablesResync, "iptables-resync", 5, "seconds between checks of the iptables rules")
	fl.BoolVar(&f.forwardRules, "iptables-forward-rules", true, "add FORWARD rules accepting traffic to and from the network")
	fl.DurationVar(&f.reconcile, "reconcile-period", 0, "how often the whole desired data plane is compared with the kernel (0: every 5m while the kernel's change notifications are watched, as for host-gw, vxlan and udp; else every 10s)")
	fl.StringVar(&f.healthzIP, "healthz-ip", "0.0.0.0", "address the health endpoint listens on")
	fl.IntVar(&f.healthzPort, "healthz-port", 0, "port of the health endpoint (0 disables it)")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fl.BoolVar(&f.showVersion, "version", false, "print the version and exit")
	_ = fl.MarkHidden("subnet-lease-ttl")
	addUpstreamOnlyFlags(fl)
}

func addEtcdFlags(fl *pflag.FlagSet, f *flags) {
	fl.StringSliceVar(&f.etcd.Endpoints, "etcd-endpoints", []string{"http://127.0.0.1:4001", "http://127.0.0.1:2379"}, "comma-separated etcd endpoints")
	fl.StringVar(&f.etcd.Prefix, "etcd-prefix", etcd.DefaultPrefix, "etcd prefix of the network config and leases")
	fl.StringVar(&f.etcd.CAFile, "etcd-cafile", "", "CA certificate file to verify etcd's certificate")
	fl.StringVar(&f.etcd.CertFile, "etcd-certfile", "", "client certificate file for etcd")
	fl.StringVar(&f.etcd.KeyFile, "etcd-keyfile", "", "client key file for etcd")
	fl.StringVar(&f.etcd.Username, "etcd-username", "", "etcd user name")
	fl.StringVar(&f.etcd.Password, "etcd-password", "", "etcd password (prefer FLANNELD_ETCD_PASSWORD in an environment file)")
}

// applyEnv sets every flag not given on the command line from
// FLANNELD_<FLAG> (upper case, dashes as underscores).
func applyEnv(fs *pflag.FlagSet) error {
	var err error
	fs.VisitAll(func(fl *pflag.Flag) {
		// --version from the environment would turn a service into a
		// version printer.
		if err != nil || fl.Changed || fl.Name == "version" || fl.Name == "help" {
			return
		}
		name := "FLANNELD_" + strings.ToUpper(strings.ReplaceAll(fl.Name, "-", "_"))
		v, ok := os.LookupEnv(name)
		if !ok {
			return
		}
		if e := fs.Set(fl.Name, v); e != nil {
			err = fmt.Errorf("%s=%q: %w", name, v, e)
		}
	})
	return err
}

// udpTuning reads the udp backend's variables, which are not flags (they
// are for comparisons and troubleshooting): FLANNEL_UDP_OFFLOAD=off turns
// its offloads off, FLANNEL_UDP_LOG_PERIOD (a Go duration) sets how often
// its counters are logged while traffic flows. A period that does not
// parse or is not positive leaves the default, and is reported in err.
func udpTuning(getenv func(string) string) (udp.Tuning, error) {
	t := udp.Tuning{NoOffload: getenv("FLANNEL_UDP_OFFLOAD") == "off"}
	v := getenv("FLANNEL_UDP_LOG_PERIOD")
	if v == "" {
		return t, nil
	}
	d, err := time.ParseDuration(v)
	if err == nil && d <= 0 {
		err = errors.New("not positive")
	}
	if err != nil {
		return t, fmt.Errorf("FLANNEL_UDP_LOG_PERIOD=%q: %w; using the default", v, err)
	}
	t.LogPeriod = d
	return t, nil
}

func newLogger(level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func runDaemon(ctx context.Context, f flags, stderr io.Writer) error {
	if f.renewMargin < 1 || f.renewMargin > 1439 {
		return fmt.Errorf("--subnet-lease-renew-margin %d: must be between 1 and 1439 minutes", f.renewMargin)
	}
	if f.iptablesResync < 1 {
		return fmt.Errorf("--iptables-resync %d: must be at least 1 second", f.iptablesResync)
	}
	log, err := newLogger(f.logLevel, stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if os.Getenv("GOMEMLIMIT") == "" { // an operator's limit wins
		defer memlimit.Start(memlimit.Floor, memlimit.Room)()
	}
	if f.healthzPort < 0 || f.healthzPort > 65535 {
		return fmt.Errorf("--healthz-port %d: must be a TCP port, or 0 to disable the health endpoint", f.healthzPort)
	}
	healthz := ""
	if f.healthzPort != 0 {
		healthz = net.JoinHostPort(f.healthzIP, strconv.Itoa(f.healthzPort))
	}
	log.Info("flanneld starting", "version", version, "etcd_endpoints", strings.Join(f.etcd.Endpoints, ","), "etcd_prefix", f.etcd.Prefix)
	for _, w := range f.warnings {
		log.Warn("ignoring a setting", "warning", w)
	}
	tuning, err := udpTuning(os.Getenv)
	if err != nil {
		log.Warn("ignoring a udp backend variable", "error", err)
	}
	err = network.Run(ctx, network.Config{
		HealthzAddr:          healthz,
		Etcd:                 f.etcd,
		Iface:                f.iface,
		HostID:               f.hostID,
		SubnetFile:           f.subnetFile,
		RenewMargin:          time.Duration(f.renewMargin) * time.Minute,
		LeaseTTL:             f.leaseTTL,
		IPMasq:               f.ipMasq,
		IPMasqNoRandomFully:  f.noRandomFully,
		IPTablesResync:       time.Duration(f.iptablesResync) * time.Second,
		IPTablesForwardRules: f.forwardRules,
		BlackholeRoute:       f.blackholeRoute,
		NetConfPath:          f.netConfPath,
		ReconcilePeriod:      f.reconcile,
		Log:                  log,
		UDP:                  tuning,
	})
	if ctx.Err() != nil {
		// Stopped by a signal, possibly before the lease was ready: a
		// clean stop, not a failure.
		log.Info("flanneld stopped")
		return nil
	}
	return err
}

func newConfigCmd(stdout, stderr io.Writer, f *flags) *cobra.Command {
	cfg := &cobra.Command{Use: "config", Short: "Work with net-conf documents"}
	thisHost, compareStored := true, true
	check := &cobra.Command{
		Use:   "check FILE|-",
		Short: "Validate a net-conf and print the effective config with defaults filled in",
		Long: "Validate a net-conf and print the effective config with defaults filled in.\n\n" +
			"On a cluster host it also checks that the pod network holds none of the addresses of the external\n" +
			"interface, chosen as the daemon chooses it (--iface, --iface-regex, --iface-can-reach, --public-ip);\n" +
			"give --this-host=false where the hosts' interfaces are not this machine's.\n\n" +
			"When etcd (--etcd-endpoints, --etcd-prefix) holds a net-conf, it also lists how the checked document\n" +
			"differs from it, and which changes running hosts apply live (the backend) or need a restart;\n" +
			"give --compare-stored=false to leave etcd alone.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var data []byte
			var err error
			if args[0] == "-" {
				data, err = io.ReadAll(os.Stdin)
			} else {
				data, err = os.ReadFile(args[0])
			}
			if err != nil {
				return err
			}
			out, warnings, err := network.CheckConfig(data)
			for _, w := range warnings {
				fmt.Fprintln(stderr, "warning:", w)
			}
			if err != nil {
				return err
			}
			if thisHost {
				note, err := network.CheckConfigOnHost(data, f.iface)
				if err != nil {
					return err
				}
				fmt.Fprintln(stderr, "this host:", note)
			}
			if compareStored {
				if err := network.CompareStoredConfig(cmd.Context(), f.etcd, data, stderr); err != nil {
					return err
				}
			}
			_, err = fmt.Fprintf(stdout, "%s\n", out)
			return err
		},
	}
	check.Flags().BoolVar(&thisHost, "this-host", true, "also check the net-conf against this host's external interface")
	check.Flags().BoolVar(&compareStored, "compare-stored", true, "also compare the net-conf with the one stored in etcd")
	cfg.AddCommand(check)
	return cfg
}

func newLeasesCmd(stdout io.Writer, f *flags) *cobra.Command {
	return &cobra.Command{
		Use:   "leases",
		Short: "Print the subnet leases stored in etcd",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 15*time.Second)
			defer cancel()
			return network.PrintLeases(ctx, f.etcd, stdout)
		},
	}
}

func newCleanupCmd(stdout io.Writer, f *flags) *cobra.Command {
	return &cobra.Command{
		Use:   "cleanup",
		Short: "Decommission this host: remove its devices, routes, iptables rules, lease and subnet file (stop the daemon first)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			return network.Cleanup(ctx, network.Config{Etcd: f.etcd, Iface: f.iface, HostID: f.hostID, SubnetFile: f.subnetFile}, stdout)
		},
	}
}
