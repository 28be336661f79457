package udp

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TUNSETOFFLOAD flags (include/uapi/linux/if_tun.h); x/sys/unix has no
// names for them.
const (
	tunFCsum = 0x01
	tunFTSO4 = 0x02
	tunFTSO6 = 0x04
)

// tunQueue is one queue (file descriptor) of the TUN device, the real
// tunIO. Every read and write goes through rc so the descriptor cannot be
// closed and reused under a system call.
type tunQueue struct {
	f      *os.File
	rc     syscall.RawConn
	vnet   bool        // IFF_VNET_HDR: each packet starts with a virtio_net_hdr
	closed atomic.Bool // Close was called: a poller error means that

	// Read's arguments and results, for readFn (a method value made once:
	// a closure per call would allocate).
	rbufs  [][]byte
	rsizes []int
	roff   int
	nread  int
	rerr   error
	readFn func(fd uintptr) bool

	wmu     sync.Mutex // serializes Write: the sender and the receiver both write
	iov     [maxCoalescedSegs + 2]unix.Iovec
	niov    int
	werr    unix.Errno
	writeFn func(fd uintptr) bool
}

// device is the TUN device with its queues and the offloads the kernel
// accepted.
type device struct {
	name   string
	queues []*tunQueue
	vnet   bool // packets carry a virtio_net_hdr
	tso    bool // reads may return TCP super-packets
}

// offloadsWanted selects what openTun asks for; "off" is the plain TUN of
// upstream flannel, for comparison and troubleshooting.
type offloadsWanted struct {
	vnet, multiQueue bool
	queues           int
}

// openTun creates (or attaches to) the TUN device name with the queues and
// offloads wanted, falling back step by step when the kernel refuses one.
//
// github.com/songgao/water cannot be used here: its Linux configuration
// has no way to ask for IFF_VNET_HDR, which must be given in the same
// TUNSETIFF call that creates or attaches the device, and without it the
// kernel hands over neither TCP super-packets nor checksum offload. So the
// device is opened the way water does it, with the flags we need:
//
//	open("/dev/net/tun") + ioctl(TUNSETIFF, IFF_TUN|IFF_NO_PI|IFF_VNET_HDR|IFF_MULTI_QUEUE)
//	ioctl(TUNSETOFFLOAD, TUN_F_CSUM|TUN_F_TSO4|TUN_F_TSO6)
func openTun(name string, w offloadsWanted, log *slog.Logger) (*device, error) {
	d := &device{name: name}
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if w.vnet {
		flags |= unix.IFF_VNET_HDR
	}
	n := max(w.queues, 1)
	if w.multiQueue && n > 1 {
		flags |= unix.IFF_MULTI_QUEUE
	} else {
		n = 1
	}
	var attempts []string
	recreated := false
	for {
		q, err := openQueue(name, flags)
		if err == nil {
			d.queues = append(d.queues, q)
			break
		}
		attempts = append(attempts, fmt.Sprintf("flags %#x: %v", flags, err))
		switch {
		case !recreated && (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EBUSY)) && linkExists(name):
			// A device of that name with other flags (a persistent one of
			// upstream flannel, say) cannot be attached to: replace it.
			log.Warn("recreating the TUN device: the existing one is incompatible", "dev", name, "error", err)
			if l, lerr := netlink.LinkByName(name); lerr == nil {
				if derr := netlink.LinkDel(l); derr != nil {
					return nil, fmt.Errorf("deleting incompatible %s: %w", name, derr)
				}
			}
			recreated = true
		case flags&unix.IFF_MULTI_QUEUE != 0:
			flags &^= unix.IFF_MULTI_QUEUE
			n = 1
		case flags&unix.IFF_VNET_HDR != 0:
			flags &^= unix.IFF_VNET_HDR
		default:
			return nil, fmt.Errorf("creating TUN device %s: %s", name, strings.Join(attempts, "; "))
		}
	}
	d.vnet = flags&unix.IFF_VNET_HDR != 0
	for len(d.queues) < n {
		q, err := openQueue(name, flags)
		if err != nil {
			log.Warn("TUN device: fewer queues than wanted", "dev", name, "queues", len(d.queues), "wanted", n, "error", err)
			break
		}
		d.queues = append(d.queues, q)
	}
	if d.vnet {
		if err := setOffload(d.queues[0], tunFCsum|tunFTSO4|tunFTSO6); err == nil {
			d.tso = true
		} else if err := setOffload(d.queues[0], tunFCsum); err != nil {
			log.Warn("TUN device: checksum offload refused", "dev", name, "error", err)
		}
	}
	return d, nil
}

func openQueue(name string, flags uint16) (*tunQueue, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF: %w", err)
	}
	f := os.NewFile(uintptr(fd), "/dev/net/tun:"+name) // non-blocking: served by the poller
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	q := &tunQueue{f: f, rc: rc, vnet: flags&unix.IFF_VNET_HDR != 0}
	q.readFn, q.writeFn = q.read, q.writev
	return q, nil
}

func setOffload(q *tunQueue, flags int) error {
	var err error
	cerr := q.rc.Control(func(fd uintptr) { err = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, flags) })
	return errors.Join(cerr, err)
}

func linkExists(name string) bool {
	_, err := netlink.LinkByName(name)
	return err == nil
}

func (d *device) close() error {
	var errs []error
	for _, q := range d.queues {
		errs = append(errs, q.Close())
	}
	return errors.Join(errs...)
}

var _ tunIO = (*tunQueue)(nil)

// BatchSize implements tunIO.
func (q *tunQueue) BatchSize() int { return readBatch }

// Close implements tunIO.
func (q *tunQueue) Close() error {
	q.closed.Store(true)
	return q.f.Close()
}

// pollerErr is what an error of the poller means: the queue was closed,
// or (no deadline is ever set on it) the poller saw EPOLLERR, which is how
// the kernel tells a queue waiting for packets that its device was
// deleted; the read(2) would say EBADFD.
func (q *tunQueue) pollerErr() error {
	if q.closed.Load() {
		return os.ErrClosed
	}
	return unix.EBADFD
}

// Read implements tunIO: read(2) until the queue is empty or bufs are
// full, waiting in the poller while there is nothing to read. An error of
// the poller comes back as os.ErrClosed or EBADFD (pollerErr).
func (q *tunQueue) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	q.rbufs, q.rsizes, q.roff = bufs[:min(len(bufs), len(sizes))], sizes, offset
	q.nread, q.rerr = 0, nil
	err := q.rc.Read(q.readFn)
	q.rbufs, q.rsizes = nil, nil
	switch {
	case q.nread > 0:
		return q.nread, nil // an error after them shows on the next call
	case err != nil:
		return 0, q.pollerErr()
	}
	return 0, q.rerr
}

// read drains up to len(q.rbufs) packets; false (nothing yet) makes the
// poller wait for the descriptor to become readable.
func (q *tunQueue) read(fd uintptr) bool {
	for q.nread < len(q.rbufs) {
		buf := q.rbufs[q.nread]
		start := q.roff
		if q.vnet {
			start -= vnetHdrLen // the kernel's header goes right before the packet
		}
		n, err := rawRead(fd, buf[start:])
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			break
		}
		if err != 0 {
			q.rerr = err
			return true
		}
		if q.vnet {
			n = max(n-vnetHdrLen, 0)
		} else {
			clear(buf[q.roff-vnetHdrLen : q.roff])
		}
		q.rsizes[q.nread] = n
		q.nread++
	}
	return q.nread > 0
}

// Write implements tunIO: one writev(2) per packet, of its header (unless
// the device has none) and its parts.
func (q *tunQueue) Write(pkts [][][]byte) (int, error) {
	q.wmu.Lock()
	defer q.wmu.Unlock()
	for i, p := range pkts {
		if !q.vnet {
			p = p[1:]
		}
		if len(p) > len(q.iov) {
			return i, unix.EMSGSIZE
		}
		for j, b := range p {
			setIov(&q.iov[j], b)
		}
		q.niov, q.werr = len(p), 0
		if err := q.rc.Write(q.writeFn); err != nil {
			return i, q.pollerErr()
		}
		if q.werr != 0 {
			return i, q.werr
		}
	}
	return len(pkts), nil
}

// rawRead is read(2) on the non-blocking fd, without entering the
// scheduler's system call state (see recvmmsg).
func rawRead(fd uintptr, b []byte) (int, unix.Errno) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	return int(n), e
}

func (q *tunQueue) writev(fd uintptr) bool {
	for {
		_, _, e := unix.RawSyscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&q.iov[0])), uintptr(q.niov))
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		q.werr = e
		return true
	}
}
