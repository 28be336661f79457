package testbed

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// PingStream is a stream of pings from a pod (ping -D -i interval), to
// count what a change costs: every request is numbered, so a loss is a
// missing icmp_seq.
type PingStream struct {
	cmd  *exec.Cmd
	out  lockedBuffer
	done chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *lockedBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *lockedBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// StartPingStream starts pinging dst from the pod every interval (in
// seconds, as ping takes it: "0.01") and returns once the first reply
// came (within 5 s), so the stream counts from a working path.
func (p *Pod) StartPingStream(ctx context.Context, dst netip.Addr, interval string) (*PingStream, error) {
	s := &PingStream{done: make(chan struct{})}
	s.cmd = exec.CommandContext(ctx, "ip", "netns", "exec", p.NS, "ping", "-D", "-i", interval, "-W", "1", dst.String())
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(s.out.String(), "icmp_seq=") {
		if time.Now().After(deadline) {
			s.Kill()
			return nil, fmt.Errorf("ping %s -> %s: no reply within 5 s:\n%s", p.Name, dst, s.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s, nil
}

// Kill ends the stream at once (cleanup).
func (s *PingStream) Kill() {
	s.cmd.Process.Kill()
	<-s.done
}

// Output is what ping printed so far.
func (s *PingStream) Output() string { return s.out.String() }

var replySeq = regexp.MustCompile(`bytes from [^ ]+ icmp_seq=(\d+) `)

// Stop ends the stream (SIGINT) and returns the replies and the sequence
// numbers missing up to the last reply (the request in flight at the
// stop is not a loss).
func (s *PingStream) Stop() (replies int, lost []int, err error) {
	s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		s.Kill()
		return 0, nil, fmt.Errorf("ping did not stop on SIGINT")
	}
	seen := map[int]bool{}
	last := 0
	for _, m := range replySeq.FindAllStringSubmatch(s.out.String(), -1) {
		n, _ := strconv.Atoi(m[1])
		seen[n] = true
		last = max(last, n)
	}
	for n := 1; n <= last; n++ {
		if !seen[n] {
			lost = append(lost, n)
		}
	}
	return len(seen), lost, nil
}

var replyStamp = regexp.MustCompile(`\[(\d+)\.(\d+)\] \d+ bytes from [^ ]+ icmp_seq=(\d+) `)

// ReplyTime is when the reply of seq was printed, in UTC as the daemon's
// log has it ("?" if there was none), to find the event that cost a ping.
func (s *PingStream) ReplyTime(seq int) string {
	for _, m := range replyStamp.FindAllStringSubmatch(s.out.String(), -1) {
		if n, _ := strconv.Atoi(m[3]); n == seq {
			sec, _ := strconv.ParseInt(m[1], 10, 64)
			us, _ := strconv.ParseInt(m[2], 10, 64)
			return time.Unix(sec, us*1000).UTC().Format("15:04:05.000")
		}
	}
	return "?"
}
