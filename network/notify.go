package network

import (
	"fmt"
	"net"
	"os"
)

// Notify sends a state line to systemd over $NOTIFY_SOCKET (sd_notify):
// "READY=1" once the host is serving, "STOPPING=1" on shutdown. Without
// $NOTIFY_SOCKET (not started by systemd with Type=notify) it does nothing.
// A leading "@" names a socket in the abstract namespace, as systemd does.
func Notify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' {
		path = "\x00" + path[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notifying systemd at %s: %w", os.Getenv("NOTIFY_SOCKET"), err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("notifying systemd: %w", err)
	}
	return nil
}
