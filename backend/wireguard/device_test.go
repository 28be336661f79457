package wireguard

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// fakeLinks is a kernel for chooseDevice: addErr is what creating a
// wireguard link returns; links are the devices that exist.
type fakeLinks struct {
	links  map[string]netlink.Link
	addErr error
	added  []string
}

func (f *fakeLinks) LinkByName(name string) (netlink.Link, error) {
	if l, ok := f.links[name]; ok {
		return l, nil
	}
	return nil, netlink.LinkNotFoundError{}
}

func (f *fakeLinks) LinkAdd(l netlink.Link) error {
	if f.addErr != nil {
		return f.addErr
	}
	f.added = append(f.added, l.Type())
	gl := *l.(*netlink.GenericLink)
	gl.Index = 7
	f.links[l.Attrs().Name] = &gl
	return nil
}

func (f *fakeLinks) LinkSetMTU(l netlink.Link, mtu int) error { l.Attrs().MTU = mtu; return nil }

// TestChooseDevice: the kernel's device when a wireguard link can be
// created (or exists), the embedded one when the kernel has no module,
// an error otherwise; each choice logged.
func TestChooseDevice(t *testing.T) {
	embeddedDev := &wgDevice{name: Dev4Name, impl: implEmbedded, index: 9}
	for _, tc := range []struct {
		name     string
		links    map[string]netlink.Link
		addErr   error
		impl     string
		log, err string
	}{
		{"module loaded", nil, nil, implKernel, "impl=kernel", ""},
		{"no module", nil, unix.EOPNOTSUPP, implEmbedded, "impl=embedded", ""},
		{"no permission", nil, unix.EPERM, "", "", "creating WireGuard device flannel-wg: operation not permitted"},
		{"kernel device exists", map[string]netlink.Link{Dev4Name: &netlink.GenericLink{LinkAttrs: netlink.LinkAttrs{Name: Dev4Name, Index: 3, MTU: 1500}, LinkType: "wireguard"}},
			nil, implKernel, "adopting the existing kernel WireGuard device", ""},
		{"a TUN device of another program", map[string]netlink.Link{Dev4Name: &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: Dev4Name, Index: 3}}},
			nil, "", "", "a tuntap device named flannel-wg exists"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeLinks{links: tc.links, addErr: tc.addErr}
			if f.links == nil {
				f.links = map[string]netlink.Link{}
			}
			var logs bytes.Buffer
			started := false
			d, err := chooseDevice(f, func() (*wgDevice, error) { started = true; return embeddedDev, nil }, Dev4Name, 1420,
				slog.New(slog.NewTextHandler(&logs, nil)))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || started {
					t.Fatalf("got %v (embedded started %t), want %q", err, started, tc.err)
				}
				return
			}
			if err != nil || d.impl != tc.impl || started != (tc.impl == implEmbedded) || !strings.Contains(logs.String(), tc.log) {
				t.Fatalf("device %+v, err %v, embedded started %t, log %s", d, err, started, logs.String())
			}
			if tc.impl == implKernel && f.links[Dev4Name].Attrs().MTU != 1420 {
				t.Errorf("MTU %d", f.links[Dev4Name].Attrs().MTU)
			}
		})
	}
	// The embedded device failing too: both reasons in the error.
	f := &fakeLinks{links: map[string]netlink.Link{}, addErr: unix.EOPNOTSUPP}
	_, err := chooseDevice(f, func() (*wgDevice, error) { return nil, errors.New("no /dev/net/tun") }, Dev4Name, 1420, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "operation not supported") || !strings.Contains(err.Error(), "no /dev/net/tun") {
		t.Errorf("both failing: %v", err)
	}
}
