//go:build tools

// Package upstream pins upstream flannel's version for the interop tests.
package upstream

import _ "github.com/flannel-io/flannel"
