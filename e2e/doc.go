// Package e2e holds the end-to-end tests: real flanneld daemons (and, for
// the interop tests, upstream's) on simulated hosts of the namespace
// testbed (e2e/testbed), with a real etcd, real pods and real traffic.
// They need root and the binaries of make build; -short skips them. The
// commands under e2e/cmd are the demo, the benchmark and the tools the
// tests run.
package e2e
