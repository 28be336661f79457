package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/flanneld-go/flannel/e2e/testbed"
)

// liveSwitch ends the demo with a live backend switch: pings every 10 ms
// between a pod of every pair of hosts, a put of the net-conf with the
// other backend, and what it cost: how long until every host switched,
// and the pings lost (none, if all is well).
func liveSwitch(ctx context.Context, tb *testbed.Testbed, from, to string) error {
	if from == "wireguard" || to == "wireguard" {
		section("live switch skipped: wireguard does not mix with the plaintext backends (a switch to or from it takes restarts)")
		return nil
	}
	section(fmt.Sprintf("live backend switch %s -> %s while pods ping each other every 10 ms", from, to))
	var streams []*testbed.PingStream
	var names []string
	defer func() {
		for _, s := range streams {
			s.Kill()
		}
	}()
	for _, a := range tb.Hosts() {
		for _, b := range tb.Hosts() {
			if a == b {
				continue
			}
			s, err := a.Pods[0].StartPingStream(ctx, b.Pods[0].Addr, "0.01")
			if err != nil {
				return err
			}
			streams = append(streams, s)
			names = append(names, a.Pods[0].Name+" -> "+b.Pods[0].Name)
		}
	}
	conf := fmt.Sprintf(`{"Network":"10.244.0.0/16","Backend":{"Type":%q}}`, to)
	fmt.Println("  etcdctl put /coreos.com/network/config '" + conf + "'")
	before := map[*testbed.Host]int{}
	for _, h := range tb.Hosts() {
		before[h] = strings.Count(h.Log(), `msg="backend switched"`)
	}
	start := time.Now()
	if err := tb.PutNetConfig(ctx, conf); err != nil {
		return err
	}
	took, err := waitSwitched(ctx, tb, before, start)
	if err != nil {
		return err
	}
	fmt.Printf("  every host switched %v after the put (lease re-published, data plane programmed)\n", took.Round(time.Millisecond))
	time.Sleep(6 * time.Second) // the old backend retires 5 s after its last peer left (mux.DefaultGrace)
	section("the switch in " + tb.Hosts()[0].Name + "'s log")
	for _, l := range strings.Split(tb.Hosts()[0].Log(), "\n") {
		for _, m := range []string{"switching backend live", "new backend up", "republished our lease", "backend switched", "retired a backend", "removed the device"} {
			if strings.Contains(l, m) {
				fmt.Println("  " + l)
			}
		}
	}
	return countLost(streams, names)
}

// waitSwitched waits until every host logged one more switch.
func waitSwitched(ctx context.Context, tb *testbed.Testbed, before map[*testbed.Host]int, start time.Time) (time.Duration, error) {
	for time.Since(start) < 30*time.Second {
		done := true
		for _, h := range tb.Hosts() {
			done = done && strings.Count(h.Log(), `msg="backend switched"`) > before[h]
		}
		if done {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return 0, fmt.Errorf("not every host switched within 30 s; see the hosts' logs")
}

// countLost stops the streams and prints what they lost.
func countLost(streams []*testbed.PingStream, names []string) error {
	section("pings during the switch")
	total, lost := 0, 0
	for i, s := range streams {
		r, l, err := s.Stop()
		if err != nil {
			return err
		}
		total, lost = total+r+len(l), lost+len(l)
		fmt.Printf("  %s: %d sent, %d lost\n", names[i], r+len(l), len(l))
	}
	fmt.Printf("  pings lost: %d of %d\n", lost, total)
	if lost > 0 {
		return fmt.Errorf("%d pings lost during the live switch", lost)
	}
	return nil
}
