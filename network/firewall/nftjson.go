package firewall

import (
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// parseNFTList reads `nft -j list table FAMILY NAME` into the state of that
// table. Rules are printed back in nft syntax (nftStmtText) for the few
// expressions our rules use; anything else keeps its JSON form, so it
// never equals one of our rules and the table is rewritten.
func parseNFTList(data []byte, table string) (nftTableState, error) {
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nftTableState{}, fmt.Errorf("parsing nft -j output: %w", err)
	}
	st := nftTableState{chains: map[string]nftChainState{}}
	var order []struct{ chain, key string } // rules in listing order
	for _, obj := range doc.Nftables {
		for kind, raw := range obj {
			var o nftObject
			if kind != "metainfo" {
				if err := json.Unmarshal(raw, &o); err != nil {
					return nftTableState{}, fmt.Errorf("parsing nft -j %s: %w", kind, err)
				}
			}
			switch {
			case kind == "metainfo":
			case kind == "table" && o.Name == table:
				st.exists = true
			case o.Table != table:
				// another table's object: not ours to judge
			case kind == "chain":
				cs := st.chains[o.Name]
				if o.Type != "" || o.Hook != "" {
					prio, err := strconv.Atoi(string(o.Prio))
					if err != nil {
						prio = math.MinInt32 // never one of ours
					}
					cs.base = nftBaseKey(o.Type, o.Hook, prio, o.Policy)
				}
				st.chains[o.Name] = cs
			case kind == "rule":
				order = append(order, struct{ chain, key string }{o.Chain, nftRuleKey(nftExprText(o.Expr), o.Comment)})
			default:
				st.other = append(st.other, kind+" "+o.Name)
			}
		}
	}
	for _, r := range order {
		cs, ok := st.chains[r.chain]
		if !ok {
			return nftTableState{}, fmt.Errorf("nft -j lists a rule of chain %q before or without the chain", r.chain)
		}
		cs.rules = append(cs.rules, r.key)
		st.chains[r.chain] = cs
	}
	sort.Strings(st.other)
	return st, nil
}

// nftObject holds the fields of the listed objects we look at.
type nftObject struct {
	Name, Table, Chain string
	Type, Hook, Policy string
	Prio               json.RawMessage
	Comment            string
	Expr               []json.RawMessage
}

// nftExprText prints a rule's statements in nft syntax, as `nft list`
// would, for what our rules use: matches on payload fields and on meta
// keys (masked or not) against addresses, prefixes and numbers, the
// verdicts, and masquerade with its flags.
func nftExprText(stmts []json.RawMessage) string {
	parts := make([]string, 0, len(stmts))
	for _, s := range stmts {
		parts = append(parts, nftStmtText(s))
	}
	return strings.Join(parts, " ")
}

func nftStmtText(raw json.RawMessage) string {
	var stmt map[string]json.RawMessage
	if json.Unmarshal(raw, &stmt) != nil || len(stmt) != 1 {
		return compactJSON(raw)
	}
	for kind, arg := range stmt {
		switch kind {
		case "accept", "drop", "return", "continue":
			if string(arg) == "null" {
				return kind
			}
		case "jump", "goto":
			var v struct{ Target string }
			if json.Unmarshal(arg, &v) == nil && v.Target != "" {
				return kind + " " + v.Target
			}
		case "masquerade":
			if text, ok := masqueradeText(arg); ok {
				return text
			}
		case "match":
			var m struct {
				Op          string
				Left, Right json.RawMessage
			}
			if json.Unmarshal(arg, &m) == nil && m.Left != nil && m.Right != nil {
				left, binop := nftValueText(m.Left)
				right, _ := nftValueText(m.Right)
				if m.Op == "==" && !binop {
					return left + " " + right
				}
				return left + " " + m.Op + " " + right
			}
		}
	}
	return compactJSON(raw)
}

func masqueradeText(arg json.RawMessage) (string, bool) {
	if string(arg) == "null" {
		return "masquerade", true
	}
	var v map[string]json.RawMessage
	if json.Unmarshal(arg, &v) != nil || len(v) != 1 || v["flags"] == nil {
		return "", false
	}
	var flags []string
	var one string
	if json.Unmarshal(v["flags"], &one) == nil {
		flags = []string{one}
	} else if json.Unmarshal(v["flags"], &flags) != nil {
		return "", false
	}
	return "masquerade " + strings.Join(flags, ","), true
}

// nftValueText prints an expression; binop says whether it is a binary
// operation (nft then prints "==" explicitly).
func nftValueText(raw json.RawMessage) (text string, binop bool) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if a, err := netip.ParseAddr(s); err == nil {
			return netip.PrefixFrom(a, a.BitLen()).String(), false // a host prefix prints as its address
		}
		return s, false
	}
	var n float64
	if json.Unmarshal(raw, &n) == nil {
		if n >= 0 && n == math.Trunc(n) && n < 1<<53 {
			return "0x" + strconv.FormatUint(uint64(n), 16), false
		}
		return compactJSON(raw), false
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil || len(obj) != 1 {
		return compactJSON(raw), false
	}
	for kind, arg := range obj {
		switch kind {
		case "payload":
			var p struct{ Protocol, Field string }
			if json.Unmarshal(arg, &p) == nil && p.Protocol != "" && p.Field != "" {
				return p.Protocol + " " + p.Field, false
			}
		case "meta":
			var m struct{ Key string }
			if json.Unmarshal(arg, &m) == nil && m.Key != "" {
				return "meta " + m.Key, false
			}
		case "prefix":
			var p struct {
				Addr string
				Len  int
			}
			if json.Unmarshal(arg, &p) == nil {
				if a, err := netip.ParseAddr(p.Addr); err == nil && p.Len >= 0 && p.Len <= a.BitLen() {
					return netip.PrefixFrom(a, p.Len).String(), false
				}
			}
		case "&", "|", "^":
			var ops []json.RawMessage
			if json.Unmarshal(arg, &ops) == nil && len(ops) == 2 {
				l, _ := nftValueText(ops[0])
				r, _ := nftValueText(ops[1])
				return l + " " + kind + " " + r, true
			}
		}
	}
	return compactJSON(raw), false
}

func compactJSON(raw json.RawMessage) string {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return strconv.Quote(string(raw))
	}
	out, _ := json.Marshal(v)
	return string(out)
}
