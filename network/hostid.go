package network

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
)

// DefaultMachineIDFile is where systemd keeps the machine ID.
const DefaultMachineIDFile = "/etc/machine-id"

// The host identity is stored in the lease (LeaseAttrs.HostID) so that a
// second host given the same PublicIP (a copied --public-ip, a cloned VM)
// never takes the first one's lease. By default it is derived from the
// machine ID together with the MAC address of the external interface:
// cloned images often share the machine ID, and hosts in network
// namespaces share the whole file system, but not their interfaces. The
// machine ID itself is not published: the identity is an HMAC keyed with
// it, as systemd asks of applications (sd_id128_get_machine_app_specific).

// hostIDRE is what --host-id accepts: short, printable, safe in logs and
// shell commands.
var hostIDRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)

// DeriveHostID is the default identity of a host: the first 16 hex digits
// of HMAC-SHA256 keyed with its machine ID over the MAC address of its
// external interface. Either may be empty (not both, or the identity means
// nothing).
func DeriveHostID(machineID string, mac net.HardwareAddr) string {
	h := hmac.New(sha256.New, []byte(machineID))
	h.Write([]byte("flanneld host identity\x00" + strings.ToLower(mac.String())))
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// HostIdentity returns this host's identity and where it comes from, for
// logs and errors: flag when --host-id is given, else derived from the
// machine ID in machineIDFile and mac, the MAC address of the interface
// named iface. With neither a machine ID nor a MAC it returns "" (the lease
// then carries no identity, as upstream's do).
func HostIdentity(flag, machineIDFile, iface string, mac net.HardwareAddr) (id, source string, err error) {
	if flag != "" {
		if !hostIDRE.MatchString(flag) {
			return "", "", fmt.Errorf("--host-id %q: use 1 to 64 letters, digits and . _ : -", flag)
		}
		return flag, "set by --host-id", nil
	}
	if machineIDFile == "" {
		machineIDFile = DefaultMachineIDFile
	}
	b, err := os.ReadFile(machineIDFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", "", fmt.Errorf("reading the machine ID for the host identity: %w (or set --host-id)", err)
	}
	machineID := strings.TrimSpace(string(b))
	var parts []string
	if machineID != "" {
		parts = append(parts, machineIDFile)
	}
	if len(mac) > 0 {
		parts = append(parts, "the MAC address of "+iface)
	}
	if len(parts) == 0 {
		return "", "none: " + machineIDFile + " is missing or empty and " + iface + " has no MAC address", nil
	}
	return DeriveHostID(machineID, mac), "derived from " + strings.Join(parts, " and "), nil
}

// interfaceMAC returns the MAC address of the interface with index idx
// (nil when it has none, as a tun device).
func interfaceMAC(idx int) (net.HardwareAddr, error) {
	ifc, err := net.InterfaceByIndex(idx)
	if err != nil {
		return nil, fmt.Errorf("reading the MAC address of the external interface for the host identity: %w", err)
	}
	return ifc.HardwareAddr, nil
}
