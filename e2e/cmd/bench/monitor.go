package main

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// kernelWatch follows one host's routes (proto 98), permanent neighbours
// and FDB entries of one device as the kernel announces them, with
//
//	ip monitor route | ip monitor neigh | ip -f bridge monitor neigh
//
// started before the change under test; each line is timestamped when it
// is read (the pipe is flushed per message by iproute2), so no polling
// adds latency. The monitors' sockets get a receive buffer of monitorBuf:
// with iproute2's default, a daemon programming 10,000 vxlan peers (three
// announcements each, the neighbour socket sees two of them) on a busy
// machine overflowed it and the watch missed entries the kernel held. The
// FDB comes through ip rather than bridge monitor for that option. The
// state is a map kind/key -> value with the time the value appeared:
//
//	route  key dst       value gateway
//	neigh  key IP        value MAC
//	fdb    key MAC       value VTEP address
type kernelWatch struct {
	dev  string // VXLAN device whose neighbours and FDB are followed ("" for none)
	mu   sync.Mutex
	cond *sync.Cond
	seen map[item]time.Time // present items and when they appeared
	val  map[string]string  // kind/key -> value present now
	cmds []*exec.Cmd
	wg   sync.WaitGroup
}

// item is one kernel entry: kind ("route", "neigh", "fdb"), key, value.
type item struct{ Kind, Key, Val string }

// watchKernel starts the monitors in namespace ns and returns once they
// run. dev is the VXLAN device, or "" (host-gw: routes only).
func watchKernel(ns, dev string) (*kernelWatch, error) {
	w := &kernelWatch{dev: dev, seen: map[item]time.Time{}, val: map[string]string{}}
	w.cond = sync.NewCond(&w.mu)
	buf := strconv.Itoa(monitorBuf)
	argvs := [][]string{{"ip", "-rcvbuf", buf, "monitor", "route"}}
	kinds := []string{"route"}
	if dev != "" {
		argvs = append(argvs, []string{"ip", "-rcvbuf", buf, "monitor", "neigh"}, []string{"ip", "-rcvbuf", buf, "-f", "bridge", "monitor", "neigh"})
		kinds = append(kinds, "neigh", "fdb")
	}
	for i, a := range argvs {
		kind := kinds[i]
		cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, a...)...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out, err := cmd.StdoutPipe()
		if err != nil {
			w.close()
			return nil, err
		}
		if err := cmd.Start(); err != nil {
			w.close()
			return nil, fmt.Errorf("%s: %w", strings.Join(cmd.Args, " "), err)
		}
		w.cmds = append(w.cmds, cmd)
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				w.line(time.Now(), kind, sc.Text())
			}
		}()
	}
	// The monitors subscribe right after exec; give them a moment so the
	// first change is not missed.
	time.Sleep(200 * time.Millisecond)
	return w, nil
}

// monitorBuf is the monitors' socket receive buffer (the kernel caps it
// at net.core.rmem_max).
const monitorBuf = 16 << 20

// line parses one line of the monitor of kind and updates the state. The
// FDB monitor prints an entry as a neighbour: "<dst> dev <dev> lladdr
// <mac> ... PERMANENT".
func (w *kernelWatch) line(at time.Time, monitor, s string) {
	deleted := strings.HasPrefix(s, "Deleted ")
	s = strings.TrimPrefix(s, "Deleted ")
	f := strings.Fields(s)
	if len(f) < 3 {
		return
	}
	arg := func(name string) string {
		for i := 0; i+1 < len(f); i++ {
			if f[i] == name {
				return f[i+1]
			}
		}
		return ""
	}
	var kind, key, val string
	switch {
	case monitor == "route" && arg("dev") != "" && (arg("proto") == "98" || inScaleNet(f[0])): // a route of ours (upstream's carry no proto)
		kind, key, val = "route", f[0], arg("via")
		if !strings.Contains(key, "/") {
			key += "/32"
		}
	case monitor == "neigh" && arg("dev") == w.dev && arg("lladdr") != "" && strings.Contains(s, "PERMANENT"):
		kind, key, val = "neigh", f[0], arg("lladdr")
	case monitor == "fdb" && arg("dev") == w.dev && arg("lladdr") != "" && strings.Contains(s, "PERMANENT") && isAddr(f[0]):
		kind, key, val = "fdb", arg("lladdr"), f[0]
	default:
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	k := kind + "/" + key
	if old, ok := w.val[k]; ok {
		delete(w.seen, item{kind, key, old})
		delete(w.val, k)
	}
	if !deleted {
		w.val[k] = val
		w.seen[item{kind, key, val}] = at
	}
	w.cond.Broadcast()
}

// wait blocks until every item is present, and returns the latest time
// one of them appeared (items present before since count as since). It
// gives up after timeout or when ctx is done, returning how many are
// missing.
func (w *kernelWatch) wait(ctx context.Context, items []item, since time.Time, timeout time.Duration) (time.Time, int) {
	deadline := time.Now().Add(timeout)
	wake := func() {
		w.mu.Lock()
		w.cond.Broadcast()
		w.mu.Unlock()
	}
	t := time.AfterFunc(timeout, wake)
	defer t.Stop()
	defer context.AfterFunc(ctx, wake)()
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		last, missing := since, 0
		for _, it := range items {
			at, ok := w.seen[it]
			if !ok {
				missing++
				continue
			}
			if at.After(last) {
				last = at
			}
		}
		if missing == 0 || !time.Now().Before(deadline) || ctx.Err() != nil {
			return last, missing
		}
		w.cond.Wait()
	}
}

// close stops the monitors.
func (w *kernelWatch) close() {
	for _, c := range w.cmds {
		c.Process.Kill()
	}
	w.wg.Wait()
	for _, c := range w.cmds {
		c.Wait()
	}
}

// scaleNet is the scale scenarios' Network; upstream flanneld, measured
// with -flanneld, marks its routes with no protocol, so the routes into
// it are taken as the daemon's whatever their protocol.
var scaleNet = netip.MustParsePrefix("10.128.0.0/9")

func isAddr(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

func inScaleNet(dst string) bool {
	p, err := netip.ParsePrefix(dst)
	return err == nil && scaleNet.Contains(p.Addr()) && p.Bits() > scaleNet.Bits()
}
