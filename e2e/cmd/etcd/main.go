// Command etcd is the etcd server, built from the module version pinned in
// go.mod so that tests, the demo and CI run the same etcd without downloads
// outside the Go module proxy.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
