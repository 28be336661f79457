package testbed

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// WireGuardDir is the host's /run/wireguard as its daemon sees it: the
// UAPI sockets of embedded WireGuard devices, <dir>/<device>.sock.
func (h *Host) WireGuardDir() string { return filepath.Join(h.dir, "wireguard") }

// WireGuardKeyFile is the host daemon's WireGuard private key file.
func (h *Host) WireGuardKeyFile() string { return filepath.Join(h.dir, "wgkey") }

// UAPI sends one request to the embedded WireGuard device dev of the
// host's daemon ("get=1\n\n", or a "set=1\n..." block) and returns the
// reply up to and without its "errno=N" line; a non-zero errno is an
// error. It is what wg show / wg set do with the socket.
func (h *Host) UAPI(ctx context.Context, dev, request string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", filepath.Join(h.WireGuardDir(), dev+".sock"))
	if err != nil {
		return "", fmt.Errorf("testbed: %s: UAPI of %s: %w", h.Name, dev, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if _, err := io.WriteString(c, request); err != nil {
		return "", err
	}
	var out strings.Builder
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		line := sc.Text()
		if errno, ok := strings.CutPrefix(line, "errno="); ok {
			if errno != "0" {
				return out.String(), fmt.Errorf("testbed: %s: UAPI of %s: errno %s", h.Name, dev, errno)
			}
			return out.String(), nil
		}
		out.WriteString(line + "\n")
	}
	return out.String(), fmt.Errorf("testbed: %s: UAPI of %s: reply ended early: %v", h.Name, dev, sc.Err())
}

// Pcap is a running packet capture into a pcap file.
type Pcap struct {
	path string
	c    *capture
}

// CapturePcap records every frame on the switch's bridge matching filter
// (a tcpdump filter) into path until Stop. Equivalent to:
// ip netns exec <prefix>-sw tcpdump -n -U -s 0 -i br0 -w $path $filter
func (tb *Testbed) CapturePcap(ctx context.Context, path, filter string) (*Pcap, error) {
	argv := []string{"ip", "netns", "exec", tb.ns("sw"), "tcpdump", "-n", "-U", "-s", "0", "-i", "br0", "-w", path}
	if filter != "" {
		argv = append(argv, filter)
	}
	c, err := tb.startCapture(argv)
	if err != nil {
		return nil, err
	}
	if err := c.waitReady(ctx); err != nil {
		return nil, err
	}
	return &Pcap{path: path, c: c}, nil
}

// Stop ends the capture and returns the captured frames (Ethernet).
func (p *Pcap) Stop() ([][]byte, error) {
	p.c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.c.done:
	case <-time.After(10 * time.Second):
		p.c.cmd.Process.Kill()
		<-p.c.done
	}
	return ReadPcap(p.path)
}

// ReadPcap reads the frames of a pcap file (microsecond or nanosecond
// timestamps, either byte order).
func ReadPcap(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) < 24 {
		return nil, errors.New("testbed: pcap file too short")
	}
	var bo binary.ByteOrder
	switch binary.LittleEndian.Uint32(b) {
	case 0xa1b2c3d4, 0xa1b23c4d:
		bo = binary.LittleEndian
	case 0xd4c3b2a1, 0x4d3cb2a1:
		bo = binary.BigEndian
	default:
		return nil, errors.New("testbed: not a pcap file")
	}
	var frames [][]byte
	for off := 24; off+16 <= len(b); {
		n := int(bo.Uint32(b[off+8:]))
		off += 16
		if off+n > len(b) {
			break // the last record was cut short
		}
		frames = append(frames, b[off:off+n])
		off += n
	}
	return frames, nil
}

// WGShow renders the embedded device dev of the host's daemon like
// wg show does: its public key and port, and each peer's public key,
// endpoint, allowed IPs and last handshake. Secrets (the private and
// pre-shared keys) are left out, as wg show leaves them out.
func (h *Host) WGShow(ctx context.Context, dev string) (string, error) {
	out, err := h.UAPI(ctx, dev, "get=1\n\n")
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "interface: %s\n", dev)
	for line := range strings.Lines(out) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		switch k {
		case "private_key":
			if raw, err := hex.DecodeString(v); err == nil && len(raw) == wgtypes.KeyLen {
				fmt.Fprintf(&b, "  public key: %s\n", wgtypes.Key(raw).PublicKey())
			}
		case "listen_port":
			fmt.Fprintf(&b, "  listening port: %s\n", v)
		case "public_key":
			if raw, err := hex.DecodeString(v); err == nil && len(raw) == wgtypes.KeyLen {
				fmt.Fprintf(&b, "\npeer: %s\n", wgtypes.Key(raw))
			}
		case "endpoint":
			fmt.Fprintf(&b, "  endpoint: %s\n", v)
		case "allowed_ip":
			fmt.Fprintf(&b, "  allowed ips: %s\n", v)
		case "last_handshake_time_sec":
			if v != "0" {
				sec, _ := strconv.ParseInt(v, 10, 64)
				fmt.Fprintf(&b, "  latest handshake: %s ago\n", time.Since(time.Unix(sec, 0)).Round(time.Second))
			}
		case "rx_bytes", "tx_bytes":
			fmt.Fprintf(&b, "  %s: %s\n", strings.ReplaceAll(k, "_", " "), v)
		}
	}
	return b.String(), nil
}
