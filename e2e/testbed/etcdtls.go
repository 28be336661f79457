package testbed

// etcd with TLS and with authentication, as an operator secures it:
//
//	etcd --cert-file server.pem --key-file server-key.pem \
//	     --trusted-ca-file ca.pem --client-cert-auth \
//	     --listen-client-urls https://192.168.50.1:2379 ...
//	etcdctl user add root; etcdctl user grant-role root root; etcdctl auth enable
//
// The certificates are made by the testbed (internal/testpki) in
// <workdir>/pki: ca.pem, server.pem (IP SAN 192.168.50.1), client.pem.
// Passwords go to etcdctl on standard input where etcdctl allows it; the
// root password is on etcdctl's command line (--user), which only the
// testbed sees.

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"sync"

	"github.com/flanneld-go/flannel/internal/testpki"
)

// etcdEndpointTLS is the client URL of etcd with Options.EtcdTLS.
const etcdEndpointTLS = "https://192.168.50.1:2379"

// etcdSecurity is the testbed's PKI and the etcdctl user. It has its own
// lock: etcdctl runs while tb.mu is held (startEtcd) and while it is not.
type etcdSecurity struct {
	mu       sync.Mutex
	pki      *testpki.Set
	rootUser string // "root:password" after EnableEtcdAuth
}

// EtcdPKI returns the testbed's CA, server and client certificates (nil
// without Options.EtcdTLS). Use its CA to issue more certificates, or
// testpki.NewCA in WorkDir for a CA etcd does not trust.
func (tb *Testbed) EtcdPKI() *testpki.Set {
	tb.etcdSec.mu.Lock()
	defer tb.etcdSec.mu.Unlock()
	return tb.etcdSec.pki
}

// EtcdTLSFlags returns the flanneld flags for the testbed's TLS etcd:
// --etcd-cafile, --etcd-certfile and --etcd-keyfile with the testbed's
// client certificate. Nil without Options.EtcdTLS.
func (tb *Testbed) EtcdTLSFlags() []string {
	p := tb.EtcdPKI()
	if p == nil {
		return nil
	}
	return []string{"--etcd-cafile", p.CA.File, "--etcd-certfile", p.Client.Cert, "--etcd-keyfile", p.Client.Key}
}

// etcdTLSServerFlags makes the PKI on first use and returns etcd's TLS
// flags (none without Options.EtcdTLS).
func (tb *Testbed) etcdTLSServerFlags() ([]string, error) {
	if !tb.opts.EtcdTLS {
		return nil, nil
	}
	s := &tb.etcdSec
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pki == nil {
		p, err := testpki.NewSet(filepath.Join(tb.workDir, "pki"), netip.MustParseAddr("192.168.50.1"))
		if err != nil {
			return nil, err
		}
		s.pki = p
		tb.logf("testbed %s: etcd TLS certificates in %s", tb.prefix, filepath.Dir(p.CA.File))
	}
	return []string{
		"--cert-file", s.pki.Server.Cert,
		"--key-file", s.pki.Server.Key,
		"--trusted-ca-file", s.pki.CA.File,
		"--client-cert-auth",
	}, nil
}

// etcdctlSecurityFlags are the client certificate and user flags etcdctl
// needs.
func (tb *Testbed) etcdctlSecurityFlags() []string {
	s := &tb.etcdSec
	s.mu.Lock()
	defer s.mu.Unlock()
	var f []string
	if s.pki != nil {
		f = append(f, "--cacert", s.pki.CA.File, "--cert", s.pki.Client.Cert, "--key", s.pki.Client.Key)
	}
	if s.rootUser != "" {
		f = append(f, "--user", s.rootUser)
	}
	return f
}

// EnableEtcdAuth creates the root user with rootPassword and turns
// authentication on; from then on Etcdctl runs as root.
// Equivalent to: etcdctl user add root; etcdctl user grant-role root root;
// etcdctl auth enable
func (tb *Testbed) EnableEtcdAuth(ctx context.Context, rootPassword string) error {
	if rootPassword == "" {
		return errors.New("testbed: EnableEtcdAuth needs a root password")
	}
	if _, err := tb.etcdctl(ctx, rootPassword+"\n", "user", "add", "root", "--interactive=false"); err != nil {
		return err
	}
	if _, err := tb.Etcdctl(ctx, "user", "grant-role", "root", "root"); err != nil {
		return err
	}
	if _, err := tb.Etcdctl(ctx, "auth", "enable"); err != nil {
		return err
	}
	tb.etcdSec.mu.Lock()
	tb.etcdSec.rootUser = "root:" + rootPassword
	tb.etcdSec.mu.Unlock()
	tb.logf("testbed %s: etcd authentication enabled", tb.prefix)
	return nil
}

// AddEtcdUser creates user with password (given on etcdctl's standard
// input) and a role of the same name that may read and write every key
// under prefix, e.g. "/coreos.com/network/".
// Equivalent to: etcdctl user add $user; etcdctl role add $user;
// etcdctl role grant-permission --prefix $user readwrite $prefix;
// etcdctl user grant-role $user $user
func (tb *Testbed) AddEtcdUser(ctx context.Context, user, password, prefix string) error {
	if _, err := tb.etcdctl(ctx, password+"\n", "user", "add", user, "--interactive=false"); err != nil {
		return err
	}
	for _, args := range [][]string{
		{"role", "add", user},
		{"role", "grant-permission", "--prefix", user, "readwrite", prefix},
		{"user", "grant-role", user, user},
	} {
		if _, err := tb.Etcdctl(ctx, args...); err != nil {
			return err
		}
	}
	return nil
}
