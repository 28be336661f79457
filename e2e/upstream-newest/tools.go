//go:build tools

// Package upstreamnewest pins the newest upstream flannel release for the
// interop tests.
package upstreamnewest

import _ "github.com/flannel-io/flannel"
