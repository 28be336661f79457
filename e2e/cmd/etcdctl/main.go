// Command etcdctl is the stock etcdctl (API v3), built from the module version
// pinned in go.mod. Tests use it to check that our etcd layout is what an
// operator sees with the real tool.
package main

import "go.etcd.io/etcd/etcdctl/v3/ctlv3"

func main() { ctlv3.MustStart() }
