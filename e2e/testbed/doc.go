// Package testbed simulates several container hosts on one machine with
// network namespaces, for end-to-end tests of flanneld and for the demo.
//
// Topology (prefix is "flt" + 5 random hex digits, e.g. "flt3a9c1"):
//
//	<prefix>-sw   switch: bridge br0 192.168.50.1/24 (fd00:50::1/64), etcd on :2379
//	  ├─ h1 ── eth0 of <prefix>-h1   192.168.50.11/24, default via .1
//	  │          └─ cni0 (FLANNEL_SUBNET) ── vp1 ── eth0 of <prefix>-h1p1, ...
//	  ├─ h2 ── eth0 of <prefix>-h2   192.168.50.12/24
//	  ├─ out ─ eth0 of <prefix>-out  192.168.50.200/24 (AddOutside)
//	  └─ rt ── eth0 of <prefix>-rt   192.168.50.254/24 (AddSegment)
//	                 eth1 192.168.60.254/24 ── rt on br0 of <prefix>-sw2
//	                                              └─ h3 ── eth0 of <prefix>-h3 192.168.60.13/24
//
// Design notes:
//
//   - Nothing is ever created in the root network namespace: every veth is
//     created inside a namespace with its peer put directly into another one
//     ("ip -n SW link add h1 type veth peer name eth0 netns HOST"). The
//     switch has no link to the root namespace and no default route, so no
//     test traffic can leave the machine.
//   - Every change is made with the ip command (and sysctl, tcpdump, ping) run
//     through os/exec: what the testbed does is what an operator would type,
//     and a failure names the full command and its output.
//   - Each thing created (namespace, process, directory) registers its
//     removal right after it exists; Close runs the removals in reverse
//     order, so it works after a partial construction and is idempotent.
//     Removing a namespace first kills the processes inside it (a deleted
//     namespace otherwise keeps them running), then deletes it; deleting
//     the switch removes its bridge and the veth peers on it.
//   - Processes (etcd, flanneld, tcpdump) run as "ip netns exec NS binary
//     ...": ip execs the binary, so the pid we hold is the binary's own, and
//     Pdeathsig SIGKILL stops it if the test process dies. Pdeathsig fires
//     when the OS thread that started the child exits; the Go runtime keeps
//     its threads unless a goroutine exits while locked to one, which this
//     package never does. If a test binary is killed hard (panic on
//     timeout), namespaces may remain: CleanAll (make e2e-clean) removes
//     them, keeping the testbeds whose owner (recorded in
//     $TMPDIR/<prefix>.owner) still runs.
//   - Pod networking is what a CNI bridge plugin would build: bridge cni0
//     carries the first address of the host's lease (read from the subnet
//     file the daemon writes), each pod is a namespace with a veth on cni0
//     and a default route via that address.
package testbed
