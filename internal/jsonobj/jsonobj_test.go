package jsonobj

import (
	"encoding/json"
	"maps"
	"testing"
)

// members collects what Members yields, the last value of a key winning
// as in encoding/json.
func members(data []byte) (map[string]string, bool) {
	out := map[string]string{}
	ok := Members(data, func(key, val []byte) bool {
		out[string(key)] = string(val)
		return true
	})
	return out, ok
}

func TestMembers(t *testing.T) {
	for _, c := range []struct {
		in   string
		ok   bool
		want map[string]string
	}{
		{`{}`, true, map[string]string{}},
		{` { "a" : 1 , "b":"x\"y" ,"c":{"d":[1,{"e":"}"}]},"f":null,"g":-0.5e3 } `, true,
			map[string]string{"a": "1", "b": `"x\"y"`, "c": `{"d":[1,{"e":"}"}]}`, "f": "null", "g": "-0.5e3"}},
		{`{"a":1,"a":2}`, true, map[string]string{"a": "2"}},
		{`{"a\u0062":1}`, false, nil}, // an escaped key: encoding/json's to read
		{`{"a":1,}`, false, nil},
		{`[1]`, false, nil},
		{`null`, false, nil},
		{``, false, nil},
	} {
		got, ok := members([]byte(c.in))
		if ok != c.ok || ok && !maps.Equal(got, c.want) {
			t.Errorf("Members(%s) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
	for in, want := range map[string]bool{`"ab"`: true, `"a\"b"`: false, `"é"`: false, `5`: false, `""`: true} {
		if s, ok := String([]byte(in)); ok != want || ok && `"`+s+`"` != in {
			t.Errorf("String(%s) = %q, %v", in, s, ok)
		}
	}
	for in, want := range map[string]int{"0": 0, "-0": 0, "42": 42, "-7": -7, "123456789": 123456789} {
		if n, ok := Int([]byte(in)); !ok || n != want {
			t.Errorf("Int(%s) = %d, %v", in, n, ok)
		}
	}
	for _, in := range []string{"1.0", "1e2", "1234567890", "-", "", "null", `"1"`} {
		if _, ok := Int([]byte(in)); ok {
			t.Errorf("Int(%s) read", in)
		}
	}
}

// FuzzMembers: what Members reads is what encoding/json reads into a map
// of raw values, and whatever String and Int read, encoding/json reads
// the same.
func FuzzMembers(f *testing.F) {
	f.Add([]byte(`{"PublicIP":"192.168.50.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:02"}}`))
	f.Add([]byte(`{"a":[1,"]",{"b":"\\"}],"c":-12}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, ok := members(data)
		if !ok {
			return
		}
		var want map[string]json.RawMessage
		if err := json.Unmarshal(data, &want); err != nil {
			t.Fatalf("Members read %q, encoding/json refuses it: %v", data, err)
		}
		if len(got) != len(want) {
			t.Fatalf("%q: %v, encoding/json %v", data, got, want)
		}
		for k, v := range want {
			if got[k] != string(v) {
				t.Fatalf("%q: key %q = %s, encoding/json %s", data, k, got[k], v)
			}
			if s, ok := String(v); ok {
				var js string
				if json.Unmarshal(v, &js) != nil || js != s {
					t.Fatalf("String(%s) = %q, encoding/json %q", v, s, js)
				}
			}
			if n, ok := Int(v); ok {
				var jn int
				if json.Unmarshal(v, &jn) != nil || jn != n {
					t.Fatalf("Int(%s) = %d, encoding/json %d", v, n, jn)
				}
			}
		}
	})
}
