package network

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

// TestNotify checks the sd_notify protocol with a real unix datagram socket
// standing in for systemd.
func TestNotify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	for _, msg := range []string{"READY=1", "STOPPING=1"} {
		if err := Notify(msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := conn.ReadFromUnix(buf)
		if err != nil || string(buf[:n]) != msg {
			t.Fatalf("got %q %v, want %q", buf[:n], err, msg)
		}
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := Notify("READY=1"); err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v", err)
	}
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "absent.sock"))
	if err := Notify("READY=1"); err == nil {
		t.Error("no error for a missing socket")
	}
}
