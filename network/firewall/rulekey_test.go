package firewall

import (
	"slices"
	"testing"
)

func ruleKeys(rules [][]string) []string {
	var out []string
	for _, r := range rules {
		out = append(out, ruleKey(r))
	}
	return out
}

func TestRuleKey(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{`-A X -s 10.244.0.0/16 -j ACCEPT`, `-s 10.244.0.0/16 -j ACCEPT`},
		{`-A X -s 10.0.0.1 -d 10.1.2.3/16 -j RETURN`, `-s 10.0.0.1/32 -d 10.1.0.0/16 -j RETURN`},
		{`-A X --source 10.0.0.1/32 --destination fd00:0010::1 -j RETURN`, `-s 10.0.0.1/32 -d fd00:10::1/128 -j RETURN`},
		{`-A X -m comment --comment "flanneld masq" -j RETURN`, `-m comment --comment "flanneld masq" -j RETURN`},
		{`-A X -m comment --comment flanneld -j RETURN`, `-m comment --comment flanneld -j RETURN`},
		{`-A X -m comment --comment "say \"hi\"" -j RETURN`, `-m comment --comment "say \"hi\"" -j RETURN`},
		{`-A X  -s 10.0.0.0/8   -j ACCEPT -c 12 3400`, `-s 10.0.0.0/8 -j ACCEPT`},
		{`-A X ! -d 224.0.0.0/4 -j MASQUERADE --random-fully`, `! -d 224.0.0.0/4 -j MASQUERADE --random-fully`},
	} {
		args := splitArgs(tc.line)
		if got := ruleKey(args[2:]); got != tc.want {
			t.Errorf("ruleKey(%s)\n got %s\nwant %s", tc.line, got, tc.want)
		}
	}
}

func TestRuleListedKeys(t *testing.T) {
	lines := []string{
		"-P POSTROUTING ACCEPT",
		"-N FLANNEL-POSTRTG",
		`-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`,
		"-A FLANNEL-POSTRTG -s 10.0.0.1/32 -j RETURN",
		"-A POSTROUTING -s 192.0.2.0/24 -j MASQUERADE",
	}
	want := []string{`-m comment --comment "flanneld masq" -j FLANNEL-POSTRTG`, "-s 192.0.2.0/24 -j MASQUERADE"}
	if got := listedKeys(lines, "POSTROUTING"); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}
