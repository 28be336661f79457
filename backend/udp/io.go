package udp

import "net/netip"

// The packet loops (send.go, recv.go) see the kernel through two small
// batched interfaces, shaped like wireguard-go's tun.Device and conn.Bind:
// tunIO for one queue of flannel0, udpIO for the UDP socket of the same
// queue. The real ones are *tunQueue (tun_linux.go) and *udpSock
// (sock_linux.go); the tests drive the loops through channel-backed fakes
// instead, without root. Both carry the offloads: every packet of a tunIO
// has a virtio_net_hdr (TSO, checksum offload), every message of a udpIO a
// segment size (UDP_SEGMENT on send, UDP_GRO on receive).
//
// Nothing in them allocates: the callers own every buffer and reuse it.

// tunIO is one queue of the TUN device. Read is called by one goroutine at
// a time; Write may be called from several (the receiver writes packets,
// the sender ICMP errors), and each call writes its packets in order.
type tunIO interface {
	// Read blocks until at least one packet is ready and reads up to
	// len(bufs) of them: packet i goes to bufs[i][offset:], its length to
	// sizes[i], and its virtio_net_hdr to bufs[i][offset-vnetHdrLen:offset]
	// (all zero when the device has no IFF_VNET_HDR). offset must be at
	// least vnetHdrLen and bufs[i] must hold the largest packet after it.
	// err is non-nil only when n is 0: the queue is closed or the device
	// is gone.
	Read(bufs [][]byte, sizes []int, offset int) (n int, err error)
	// Write writes each of pkts as one packet. A packet is a gather list
	// (written with one writev, not copied): pkts[i][0] is its
	// virtio_net_hdr, exactly vnetHdrLen bytes, and the rest its bytes in
	// order. On a device without IFF_VNET_HDR the header is left out, and
	// must then be all zero. Write returns how many packets were written;
	// when that is less than len(pkts), err is why pkts[n] was not, and the
	// caller may go on with pkts[n+1:].
	Write(pkts [][][]byte) (n int, err error)
	// BatchSize is the most packets one Read returns (the caller sizes its
	// buffers by it).
	BatchSize() int
	// Close closes the queue; blocked calls return an error.
	Close() error
}

// udpIO is the UDP socket of one queue. ReadBatch and WriteBatch may run at
// the same time, each from one goroutine.
type udpIO interface {
	// ReadBatch blocks until at least one message arrives and fills up to
	// len(msgs) of them (see rxMsg). err is non-nil only when n is 0.
	ReadBatch(msgs []rxMsg) (n int, err error)
	// WriteBatch sends msgs in order (see txMsg), waiting while the socket
	// buffer is full. It returns how many were sent; when that is less
	// than len(msgs), err is why msgs[n] was not (an errno from the kernel:
	// EIO, EINVAL or EOPNOTSUPP for a GSO message means the route cannot
	// do UDP GSO), and the caller may go on with msgs[n+1:].
	WriteBatch(msgs []txMsg) (n int, err error)
	// BatchSize is the most messages one ReadBatch returns.
	BatchSize() int
	// Close closes the socket; blocked calls return an error.
	Close() error
}

// rxMsg is one received message. The caller sets buf; ReadBatch sets the
// rest: the message is buf[:n], from src. With UDP GRO it is a run of
// datagrams of one flow, each segSize bytes but the last (which may be
// shorter); segSize 0 means one datagram.
type rxMsg struct {
	buf     []byte
	n       int
	src     netip.AddrPort
	segSize int
}

// txMsg is one message to send to dst: the bytes of bufs in order,
// gathered by the kernel (not copied). segSize > 0 asks for UDP GSO: the
// kernel cuts the message into datagrams of segSize bytes, the last one
// possibly shorter.
type txMsg struct {
	bufs    [][]byte
	dst     netip.AddrPort
	segSize int
}
