package firewall

import (
	"net/netip"
	"strings"
)

// ruleKey renders a rule spec (the arguments after "-A CHAIN") the way
// iptables -S prints it: addresses as masked prefixes, arguments with spaces
// in double quotes, no counters. The result is also valid iptables-restore
// syntax.
func ruleKey(args []string) string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "-c" && i+3 == len(args) { // counters, iptables -v -S in nft mode
			break
		}
		if flag, ok := addrFlags[a]; ok && i+1 < len(args) {
			i++
			out = append(out, flag, canonAddr(args[i]))
			continue
		}
		out = append(out, quoteArg(a))
	}
	return strings.Join(out, " ")
}

var addrFlags = map[string]string{
	"-s": "-s", "--source": "-s", "--src": "-s",
	"-d": "-d", "--destination": "-d", "--dst": "-d",
}

func canonAddr(s string) string {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked().String()
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()).String()
	}
	return s
}

func quoteArg(a string) string {
	if a != "" && !strings.ContainsAny(a, " \t\"\\'") {
		return a
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(a) + `"`
}

// splitArgs splits an iptables -S line into arguments, honouring double
// quotes and backslash escapes inside them.
func splitArgs(line string) []string {
	var (
		args   []string
		cur    strings.Builder
		inArg  bool
		quoted bool
	)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quoted && c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
		case c == '"':
			quoted, inArg = !quoted, true
		case !quoted && (c == ' ' || c == '\t'):
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
		default:
			cur.WriteByte(c)
			inArg = true
		}
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args
}

// listedKeys returns the keys of the "-A chain ..." lines of iptables -S
// output, in order; -N and -P lines are skipped.
func listedKeys(lines []string, chain string) []string {
	var keys []string
	for _, l := range lines {
		args := splitArgs(l)
		if len(args) >= 2 && args[0] == "-A" && args[1] == chain {
			keys = append(keys, ruleKey(args[2:]))
		}
	}
	return keys
}
