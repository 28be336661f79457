// Package firewall programs this host's ip-masq and forwarding rules, laid
// out as upstream flannel lays them out, so operators and other tools
// recognise them. A Firewall has one Mode: iptables (the default, below)
// or nftables (EnableNFTables in the net-conf, last section). Both share
// the resync loop, status, readiness and counters; a mode only knows how
// to ensure and remove its rules (ruleMode).
//
// Two chains of ours, each hooked by a single jump placed first in a
// built-in chain, per IP family: iptables for IPv4 and, when the network has
// an IPv6 pair, ip6tables for IPv6 (ip6tables is left alone otherwise):
//
//	nat    POSTROUTING -> FLANNEL-POSTRTG  comment "flanneld masq"     (ip-masq)
//	filter FORWARD     -> FLANNEL-FWD      comment "flanneld forward"  (forward rules)
//
// FLANNEL-POSTRTG leaves what kube-proxy marked and pod-to-pod traffic alone
// (RETURN) and masquerades pods reaching the outside world (multicast
// excepted) and the host or the outside reaching a remote pod. FLANNEL-FWD
// accepts forwarded traffic from and to the cluster network, so a FORWARD
// policy of DROP does not cut pod traffic.
//
// Applied how. The state is declarative (chains.go): masqSpec and
// forwardSpec turn a RuleConfig into the exact rule lists, Ensure reads the
// kernel (iptables -S), and planChain (plan.go) computes the difference as
// iptables-restore commands. A chain whose content differs in any way (a rule
// deleted by hand, a rule of an old Network or subnet, wrong order) is
// rewritten as a whole; a missing, misplaced or duplicated jump is replaced
// by one jump at position 1. All commands of one table go to one
// `iptables-restore --noflush` run (iptables.go), which the kernel applies as
// a single transaction: there is no moment when the chain is empty or
// unhooked, so no connection is set up with the wrong NAT while we repair. A
// feature that is off has its jumps and chain removed in the same way.
//
// Resynced how. Firewall.Run calls Ensure now and every resync period, so
// rules someone deleted or changed come back, logging one line per event
// (installed, restored, failing, recovered). Runner restarts that loop when
// the lease changes and reports when the rules are first in place, so
// readiness is signalled only with them installed.
//
// iptables -S prints rules in its own normal form (-s 10.0.0.1/32, quoted
// comments, counters with -v in nft mode). ruleKey (rulekey.go) renders both
// our rules and listed ones in that form. After each write Ensure re-reads
// the chain; should an iptables binary still print a rule differently, its
// printed form is remembered as an alias of ours (with a warning) instead of
// rewriting the chain on every resync.
//
// nftables mode (nft*.go). One table per family, named as upstream's:
// ip flannel-ipv4 and, with an IPv6 pair, ip6 flannel-ipv6, each with the
// base chains postrtg (nat, postrouting, srcnat) and forward (filter,
// forward, filter), holding the same rules as FLANNEL-POSTRTG and
// FLANNEL-FWD (nftspec.go). The tables are ours alone, so no jump is
// needed, and a table that differs in any way from the desired one (a
// chain or rule missing, changed or added, another object in it, upstream
// flanneld's rules) is replaced whole: "add table; delete table; add table,
// chains, rules" for every such table in one `nft -f` transaction, through
// sigs.k8s.io/knftables. The kernel applies it at once, so no packet sees
// a half-written table. The tables are read with `nft -j list table`, and
// each listed rule printed back in nft syntax (nftjson.go) for comparison
// with ours as text; should an nft print a rule otherwise, its form is
// learned as an alias, as for iptables. A table that must not exist (the
// family is off, both features are off, or upstream's empty flannel-ipv6
// on an IPv4-only network) is deleted.
//
// Moving between modes (modes.go). At start the daemon removes the other
// mode's rules, so a host has one set whichever mode ran before (ours or
// upstream's: the names are the same); flanneld cleanup removes both. A
// mode whose binaries are missing has nothing to remove.
//
// Rules are left in place when the daemon stops, so a restart does not
// interrupt pod traffic; Remove deletes them when a host is decommissioned.
// EnableForwarding sets the ip_forward sysctls the rules rely on.
package firewall
