// Package jsonobj reads the members of small, flat JSON objects in place:
// the lease values and vxlan backend data every host reads for every
// peer. encoding/json decodes one of them through reflection with a
// decoder state and a parse stack of its own (about 400 bytes of garbage
// each), five times per peer when 10,000 peers start up.
//
// It reads only what it can read exactly as encoding/json would: keys
// without escapes, strings of printable ASCII without escapes, integer
// literals. For anything else Members or the value readers report false
// and the caller decodes with encoding/json, so a value is never read
// differently from how encoding/json reads it.
package jsonobj

import "encoding/json"

// Members calls f with the key (the bytes between its quotes) and the
// raw value of each member of the object data, in order, while f returns
// true. It reports false, having called f for none or some, when data is
// not valid JSON, not an object, holds a key that is not plain (printable
// ASCII without escapes), or f returned false.
func Members(data []byte, f func(key, val []byte) bool) bool {
	if !json.Valid(data) {
		return false
	}
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return false
	}
	i = skipSpace(data, i+1)
	if data[i] == '}' {
		return true
	}
	for {
		// data is valid: a key string, a colon, a value, then a comma or
		// the closing brace.
		end := stringEnd(data, i)
		key := data[i+1 : end-1]
		if !plain(key) {
			return false
		}
		i = skipSpace(data, skipSpace(data, end)+1) // past the colon
		vend := valueEnd(data, i)
		if !f(key, data[i:vend]) {
			return false
		}
		i = skipSpace(data, vend)
		if data[i] == '}' {
			return true
		}
		i = skipSpace(data, i+1) // past the comma
	}
}

// String returns the contents of the JSON string val when it is printable
// ASCII without escapes.
func String(val []byte) (string, bool) {
	if len(val) < 2 || val[0] != '"' || !plain(val[1:len(val)-1]) {
		return "", false
	}
	return string(val[1 : len(val)-1]), true
}

// plain reports whether the contents of a JSON string are printable
// ASCII without escapes, which encoding/json reads as they are (it
// unescapes, and replaces invalid UTF-8).
func plain(s []byte) bool {
	for _, c := range s {
		if c < 0x20 || c > 0x7e || c == '\\' {
			return false
		}
	}
	return true
}

// Int returns the JSON number val when it is an integer literal (no
// fraction, no exponent) of at most 9 digits, which fits an int on every
// platform, as encoding/json decodes it into an int.
func Int(val []byte) (int, bool) {
	s, neg := val, false
	if len(s) > 0 && s[0] == '-' {
		s, neg = s[1:], true
	}
	if len(s) == 0 || len(s) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// IsNull reports whether val is the literal null.
func IsNull(val []byte) bool { return string(val) == "null" }

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// stringEnd is the index after the closing quote of the string that
// starts at i.
func stringEnd(data []byte, i int) int {
	for i++; data[i] != '"'; i++ {
		if data[i] == '\\' {
			i++
		}
	}
	return i + 1
}

// valueEnd is the index after the valid JSON value that starts at i.
func valueEnd(data []byte, i int) int {
	switch data[i] {
	case '"':
		return stringEnd(data, i)
	case '{', '[':
		depth := 0
		for ; ; i++ {
			switch data[i] {
			case '"':
				i = stringEnd(data, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
	}
	for i < len(data) && data[i] != ',' && data[i] != '}' && data[i] != ']' &&
		data[i] != ' ' && data[i] != '\t' && data[i] != '\n' && data[i] != '\r' {
		i++
	}
	return i
}
