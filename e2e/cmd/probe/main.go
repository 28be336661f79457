// Command probe is the network helper of the end-to-end tests (nc is not
// always installed, and shells cannot send binary datagrams reliably):
//
//	probe recv ADDR:PORT          accept one TCP connection, read to EOF, print "BYTES SHA256"
//	probe send ADDR:PORT BYTES    connect, send BYTES pseudo-random bytes, print "BYTES SHA256"
//	probe udp ADDR:PORT HEX...    send each HEX string as one UDP datagram
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
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
	case len(args) == 3 && args[0] == "send":
		n, err := strconv.ParseInt(args[2], 10, 64)
		if err != nil {
			return err
		}
		return send(args[1], n)
	}
	return fmt.Errorf("usage: probe recv ADDR:PORT | probe send ADDR:PORT BYTES | probe udp ADDR:PORT HEX...")
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
