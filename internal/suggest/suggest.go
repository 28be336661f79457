// Package suggest finds the known name closest to a misspelt one, for
// warnings such as `unknown field "Netwrok"; the closest known field is
// "Network"`.
package suggest

import "strings"

// Closest returns the name in known nearest to s by edit distance
// (insertions, deletions and substitutions of one character each),
// compared without regard to case. Of several equally near, the first in
// known wins. It returns "" when known is empty.
func Closest(s string, known []string) string {
	best, bestD := "", -1
	for _, k := range known {
		if d := Distance(strings.ToLower(s), strings.ToLower(k)); bestD < 0 || d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// Distance is the Levenshtein distance between a and b, by rune.
func Distance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
