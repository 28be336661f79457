// Package testpki makes throwaway certificate authorities and certificates
// for tests of etcd over TLS: ECDSA P-256 keys, PEM files, validity from an
// hour ago to a day from now unless told otherwise. What an operator would do
// with openssl or cfssl, in a few lines of crypto/x509.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// CA is a certificate authority whose certificate is in File.
type CA struct {
	File string // PEM certificate
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// Pair is a certificate and its key, as PEM files.
type Pair struct {
	Cert, Key string
}

// CertOptions describe a certificate to issue.
type CertOptions struct {
	// IPs are the IP subject alternative names (a server certificate for
	// https://192.168.50.1:2379 needs 192.168.50.1).
	IPs []netip.Addr
	// DNSNames are the DNS subject alternative names.
	DNSNames []string
	// Server and Client set the extended key usages serverAuth and
	// clientAuth.
	Server, Client bool
	// NotAfter is the end of validity; zero means a day from now. A time in
	// the past makes an expired certificate.
	NotAfter time.Time
}

// NewCA creates a self-signed CA with common name name and writes its
// certificate to dir/name.pem.
func NewCA(dir, name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("testpki: CA %s: %w", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	file := filepath.Join(dir, name+".pem")
	if err := writePEM(file, "CERTIFICATE", der, 0o644); err != nil {
		return nil, err
	}
	return &CA{File: file, cert: cert, key: key}, nil
}

// Issue creates a certificate with common name name signed by ca and writes
// dir/name.pem and dir/name-key.pem (mode 0600).
func (ca *CA) Issue(dir, name string, o CertOptions) (Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Pair{}, err
	}
	notAfter := o.NotAfter
	if notAfter.IsZero() {
		notAfter = time.Now().Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		DNSNames:     o.DNSNames,
	}
	if notAfter.Before(tmpl.NotBefore) {
		tmpl.NotBefore = notAfter.Add(-time.Hour)
	}
	for _, ip := range o.IPs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.AsSlice()))
	}
	if o.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if o.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return Pair{}, fmt.Errorf("testpki: certificate %s: %w", name, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return Pair{}, err
	}
	p := Pair{Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem")}
	if err := writePEM(p.Cert, "CERTIFICATE", der, 0o644); err != nil {
		return Pair{}, err
	}
	if err := writePEM(p.Key, "PRIVATE KEY", keyDER, 0o600); err != nil {
		return Pair{}, err
	}
	return p, nil
}

// Set is what a TLS etcd with client certificate authentication needs: a
// CA, a server certificate and a client certificate it signed.
type Set struct {
	CA     *CA
	Server Pair // serverAuth and clientAuth, for the given IPs and localhost
	Client Pair // clientAuth, common name "client"
}

// NewSet writes ca.pem, server.pem, server-key.pem, client.pem and
// client-key.pem to dir (created if missing).
func NewSet(dir string, serverIPs ...netip.Addr) (*Set, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	ca, err := NewCA(dir, "ca")
	if err != nil {
		return nil, err
	}
	srv, err := ca.Issue(dir, "server", CertOptions{IPs: serverIPs, DNSNames: []string{"localhost"}, Server: true, Client: true})
	if err != nil {
		return nil, err
	}
	cli, err := ca.Issue(dir, "client", CertOptions{Client: true})
	if err != nil {
		return nil, err
	}
	return &Set{CA: ca, Server: srv, Client: cli}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}
