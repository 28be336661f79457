package suggest

import "testing"

func TestDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"abc", "", 3}, {"", "ab", 2}, {"Network", "Network", 0},
		{"Netwrok", "Network", 2}, {"kitten", "sitting", 3}, {"SubnetLn", "SubnetLen", 1},
		{"é", "e", 1},
	} {
		if got := Distance(c.a, c.b); got != c.want {
			t.Errorf("Distance(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
		if got := Distance(c.b, c.a); got != c.want {
			t.Errorf("Distance(%q, %q) = %d, want %d (not symmetric)", c.b, c.a, got, c.want)
		}
	}
}

func TestClosest(t *testing.T) {
	known := []string{"Network", "SubnetLen", "SubnetMin", "SubnetMax", "Backend"}
	for _, c := range []struct{ in, want string }{
		{"Netwrok", "Network"}, {"network", "Network"}, {"SUBNETLN", "SubnetLen"},
		{"SubnetMix", "SubnetMin"}, // a tie between Min and Max: the first wins
		{"Backends", "Backend"},
	} {
		if got := Closest(c.in, known); got != c.want {
			t.Errorf("Closest(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	if got := Closest("x", nil); got != "" {
		t.Errorf("Closest with nothing known = %q", got)
	}
}
