//go:build !amd64 || purego

package udp

const haveVectorSum = false

func sumAVX2([]byte) uint64 { panic("unreachable: no vector sum on this platform") }
