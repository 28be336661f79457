//go:build !purego

#include "textflag.h"

// func sumAVX2(b []byte) uint64
//
// The sum of b's 32-bit little-endian words, len(b) a multiple of 16 and
// below 2^33 (so the sum cannot overflow 64 bits): each word is widened to
// 64 bits and added into one of four vector accumulators, so no carry is
// ever propagated in the loop.
TEXT ·sumAVX2(SB), NOSPLIT, $0-32
	MOVQ b_base+0(FP), SI
	MOVQ b_len+8(FP), CX
	VPXOR Y0, Y0, Y0
	VPXOR Y1, Y1, Y1
	VPXOR Y2, Y2, Y2
	VPXOR Y3, Y3, Y3

loop128:
	CMPQ CX, $128
	JB   loop16
	VPMOVZXDQ 0(SI), Y4
	VPMOVZXDQ 16(SI), Y5
	VPMOVZXDQ 32(SI), Y6
	VPMOVZXDQ 48(SI), Y7
	VPADDQ Y4, Y0, Y0
	VPADDQ Y5, Y1, Y1
	VPADDQ Y6, Y2, Y2
	VPADDQ Y7, Y3, Y3
	VPMOVZXDQ 64(SI), Y4
	VPMOVZXDQ 80(SI), Y5
	VPMOVZXDQ 96(SI), Y6
	VPMOVZXDQ 112(SI), Y7
	VPADDQ Y4, Y0, Y0
	VPADDQ Y5, Y1, Y1
	VPADDQ Y6, Y2, Y2
	VPADDQ Y7, Y3, Y3
	ADDQ $128, SI
	SUBQ $128, CX
	JMP  loop128

loop16:
	CMPQ CX, $16
	JB   done
	VPMOVZXDQ 0(SI), Y4
	VPADDQ Y4, Y0, Y0
	ADDQ $16, SI
	SUBQ $16, CX
	JMP  loop16

done:
	VPADDQ Y1, Y0, Y0
	VPADDQ Y3, Y2, Y2
	VPADDQ Y2, Y0, Y0
	VEXTRACTI128 $1, Y0, X1
	VPADDQ X1, X0, X0
	MOVQ X0, AX
	VPEXTRQ $1, X0, DX
	ADDQ DX, AX
	VZEROUPPER
	MOVQ AX, ret+24(FP)
	RET
