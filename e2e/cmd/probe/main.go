// Command probe is the network helper of the end-to-end tests (nc is not
// always installed, and shells cannot send binary datagrams reliably):
//
//	probe recv ADDR:PORT          accept one TCP connection, read to EOF, print "BYTES SHA256"
//	probe send ADDR:PORT BYTES    connect, send BYTES pseudo-random bytes, print "BYTES SHA256"
//	probe udp ADDR:PORT HEX...    send each HEX string as one UDP datagram
//	probe rawudp SRC:PORT ADDR:PORT HEX...
//	                              the same from SRC:PORT, through a raw socket:
//	                              from a port another process has bound
package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	switch {
	case len(args) == 2 && args[0] == "recv":
		return recv(args[1])
	case len(args) >= 3 && args[0] == "udp":
		return sendUDP(args[1], args[2:])
	case len(args) >= 4 && args[0] == "rawudp":
		return sendRawUDP(args[1], args[2], args[3:])
	case len(args) == 3 && args[0] == "send":
		n, err := strconv.ParseInt(args[2], 10, 64)
		if err != nil {
			return err
		}
		return send(args[1], n)
	}
	return fmt.Errorf("usage: probe recv ADDR:PORT | probe send ADDR:PORT BYTES | probe udp ADDR:PORT HEX... | probe rawudp SRC:PORT ADDR:PORT HEX...")
}

func recv(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Println("listening")
	c, err := l.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		return err
	}
	fmt.Println(n, hex.EncodeToString(h.Sum(nil)))
	return nil
}

func send(addr string, total int64) error {
	var c net.Conn
	var err error
	for range 50 { // the receiver may still be starting
		if c, err = net.Dial("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	h := sha256.New()
	rng := rand.NewChaCha8([32]byte{1, 2, 3})
	buf := make([]byte, 256<<10)
	for sent := int64(0); sent < total; {
		b := buf[:min(int64(len(buf)), total-sent)]
		rng.Read(b)
		h.Write(b)
		if _, err := c.Write(b); err != nil {
			return err
		}
		sent += int64(len(b))
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	fmt.Println(total, hex.EncodeToString(h.Sum(nil)))
	return nil
}

func sendUDP(addr string, datagrams []string) error {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	for _, d := range datagrams {
		b, err := hex.DecodeString(d)
		if err != nil {
			return err
		}
		if _, err := c.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// sendRawUDP sends each datagram from src to dst with a UDP header of its
// own over a raw IPv4 socket (the kernel adds the IP header), so that the
// source port may be one a daemon listens on.
func sendRawUDP(src, dst string, datagrams []string) error {
	from, err := netip.ParseAddrPort(src)
	if err != nil {
		return err
	}
	to, err := netip.ParseAddrPort(dst)
	if err != nil {
		return err
	}
	if !from.Addr().Is4() || !to.Addr().Is4() {
		return fmt.Errorf("rawudp: IPv4 addresses only")
	}
	c, err := net.ListenPacket("ip4:udp", from.Addr().String())
	if err != nil {
		return err
	}
	defer c.Close()
	for _, d := range datagrams {
		payload, err := hex.DecodeString(d)
		if err != nil {
			return err
		}
		b := make([]byte, 8+len(payload))
		binary.BigEndian.PutUint16(b[0:], from.Port())
		binary.BigEndian.PutUint16(b[2:], to.Port())
		binary.BigEndian.PutUint16(b[4:], uint16(len(b)))
		copy(b[8:], payload)
		binary.BigEndian.PutUint16(b[6:], udpChecksum(from.Addr(), to.Addr(), b))
		if _, err := c.WriteTo(b, &net.IPAddr{IP: to.Addr().AsSlice()}); err != nil {
			return err
		}
	}
	return nil
}

// udpChecksum is the UDP checksum of b (header with a zero checksum, and
// payload) from src to dst (RFC 768).
func udpChecksum(src, dst netip.Addr, b []byte) uint16 {
	s, d := src.As4(), dst.As4()
	ph := append(append(append([]byte{}, s[:]...), d[:]...), 0, 17, byte(len(b)>>8), byte(len(b)))
	var sum uint32
	for _, part := range [][]byte{ph, b} {
		for i := 0; i+1 < len(part); i += 2 {
			sum += uint32(part[i])<<8 | uint32(part[i+1])
		}
		if len(part)%2 == 1 {
			sum += uint32(part[len(part)-1]) << 8
		}
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	if c := ^uint16(sum); c != 0 {
		return c
	}
	return 0xffff // zero means "no checksum"
}
