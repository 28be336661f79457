# flanneld: build, test, demo.
#
#   make demo        run the daemon on simulated hosts and show pods pinging
#   make test        install what the tests need, then run every test
#   make lint        gofmt + go vet
#   make race        the packages with concurrent code under the race detector
#   make e2e-clean   remove namespaces and processes left by interrupted runs
#   make bench       data- and control-plane benchmark on the testbed (results in bench/results/)

GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
BACKEND   ?= vxlan
TEST_TIMEOUT ?= 18m

# Debian packages the privileged and end-to-end tests use.
DEB_PKGS  := iproute2 iptables nftables iperf3 iputils-ping tcpdump ethtool curl
DEB_BINS  := ip iptables ip6tables nft iperf3 ping tcpdump ethtool curl

.PHONY: all build deps cni-plugins upstream-flanneld lint race test unit demo e2e-clean clean install bench

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/flanneld .
	$(GO) build -o $(BIN)/etcd ./e2e/cmd/etcd
	$(GO) build -o $(BIN)/etcdctl ./e2e/cmd/etcdctl
	$(GO) build -o $(BIN)/testbed-clean ./e2e/cmd/testbed-clean

# deps installs the Debian packages the tests need, only when one is missing.
deps:
	@missing=""; for b in $(DEB_BINS); do command -v $$b >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages (missing:$$missing)"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends $(DEB_PKGS) >/dev/null; \
	fi
	$(GO) mod download

# cni-plugins installs the real CNI plugins and cnitool into bin/cni for
# e2e/cni_test.go, each only when missing. The flannel plugin is the
# containernetworking one at v0.9.1 (the same subnet.env contract, dual-stack
# aware): github.com/flannel-io/cni-plugin is not served by the module proxy.
CNI_BIN        := $(BIN)/cni
CNI_MOD        := github.com/containernetworking/plugins/plugins
cni_flannel    := $(CNI_MOD)/meta/flannel@v0.9.1
cni_bridge     := $(CNI_MOD)/main/bridge@latest
cni_host-local := $(CNI_MOD)/ipam/host-local@latest
cni_loopback   := $(CNI_MOD)/main/loopback@latest
cni_cnitool    := github.com/containernetworking/cni/cnitool@latest

cni-plugins: $(addprefix $(CNI_BIN)/,flannel bridge host-local loopback cnitool)

$(CNI_BIN)/%:
	GOBIN=$(CURDIR)/$(CNI_BIN) $(GO) install $(cni_$*)

# upstream-flanneld builds upstream flannel's daemon for e2e/interop_test.go
# (hosts running upstream and hosts running ours in one cluster must reach
# each other), twice: the version pinned in e2e/upstream/go.mod into
# bin/upstream/flanneld, and the newest release the module proxy serves,
# pinned in e2e/upstream-newest/go.mod, into bin/upstream-newest/flanneld.
UPSTREAM_VERSION := $(shell sed -n 's/^require github.com\/flannel-io\/flannel //p' e2e/upstream/go.mod)
UPSTREAM_NEWEST_VERSION := $(shell sed -n 's/^require github.com\/flannel-io\/flannel //p' e2e/upstream-newest/go.mod)

upstream-flanneld: $(BIN)/upstream/flanneld $(BIN)/upstream-newest/flanneld

$(BIN)/upstream/flanneld: e2e/upstream/go.mod e2e/upstream/go.sum
	@mkdir -p $(BIN)/upstream
	cd e2e/upstream && $(GO) build -ldflags '-X github.com/flannel-io/flannel/pkg/version.Version=$(UPSTREAM_VERSION)' \
		-o $(CURDIR)/$(BIN)/upstream/flanneld github.com/flannel-io/flannel

$(BIN)/upstream-newest/flanneld: e2e/upstream-newest/go.mod e2e/upstream-newest/go.sum
	@mkdir -p $(BIN)/upstream-newest
	cd e2e/upstream-newest && $(GO) build -ldflags '-X github.com/flannel-io/flannel/pkg/version.Version=$(UPSTREAM_NEWEST_VERSION)' \
		-o $(CURDIR)/$(BIN)/upstream-newest/flanneld github.com/flannel-io/flannel

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# race runs the engine, the backends and the lease model, unit and
# privileged tests, under the race detector (-short leaves out the
# end-to-end tests and the slowest waits): about 25 s. subnet/etcd is left
# out: its tests are mostly waits on a real etcd (almost a minute under
# the race detector), and make test's time on a fresh machine is near its
# budget.
RACE_PKGS := ./network/... ./backend/... ./subnet
race:
	$(GO) test -race -short -count=1 $(RACE_PKGS)

# test runs everything: unit tests, privileged tests (each in a private
# network namespace), the race tier and the end-to-end tests on the
# namespace testbed.
test: deps build cni-plugins upstream-flanneld lint race
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

# unit runs the tests that need neither root nor the testbed binaries.
unit:
	$(GO) test -count=1 -short ./...

demo: deps build cni-plugins
	$(GO) run ./e2e/cmd/demo -backend $(BACKEND)

# bench measures, on the testbed, the throughput, latency, RSS and CPU of
# the underlay and each backend, then the control plane: convergence of a
# join over 5 hosts, 1,000 leases and their churn, an acquisition storm of
# 250 managers. One at a time (a lock file), ~5 minutes; see
# Documentation/performance.md. Parts: make bench BENCH_ARGS='-only control'
# (or data, convergence, scale, storm, a scenario name).
bench: deps build
	$(GO) run ./e2e/cmd/bench $(BENCH_ARGS)

e2e-clean:
	$(GO) run ./e2e/cmd/testbed-clean

clean:
	rm -rf $(BIN)

# install lays out the binary, the systemd unit and the samples under
# $(DESTDIR) (empty: this machine). An existing /etc/flannel/flanneld.env is
# kept. Then: systemctl daemon-reload && systemctl enable --now flanneld
PREFIX ?= /usr/local
install: build
	install -D -m 0755 $(BIN)/flanneld $(DESTDIR)$(PREFIX)/bin/flanneld
	install -D -m 0644 dist/flanneld.service $(DESTDIR)/etc/systemd/system/flanneld.service
	sed -i 's|/usr/local/bin/flanneld|$(PREFIX)/bin/flanneld|' $(DESTDIR)/etc/systemd/system/flanneld.service
	@if [ ! -e $(DESTDIR)/etc/flannel/flanneld.env ]; then \
		install -D -m 0600 dist/flanneld.env $(DESTDIR)/etc/flannel/flanneld.env; fi
	install -d $(DESTDIR)/usr/share/doc/flanneld
	install -m 0644 dist/*.json Documentation/*.md $(DESTDIR)/usr/share/doc/flanneld/
