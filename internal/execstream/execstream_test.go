package execstream

import (
	"slices"
	"testing"
)

func TestSplitJoinCommand(t *testing.T) {
	for _, args := range [][]string{
		{"sh", "-c", "echo hi; exit 3"},
		{"echo", "a  b", "it's", "$HOME", "", `back\slash`, `"q"`, "tab\there", "new\nline"},
	} {
		got, err := SplitCommand(JoinCommand(args))
		if err != nil || !slices.Equal(got, args) {
			t.Errorf("round trip of %q: %q, %v", args, got, err)
		}
	}
	for in, want := range map[string][]string{
		`/bin/sh`:               {"/bin/sh"},
		`  ls   -la  `:          {"ls", "-la"},
		`sh -c "echo \"x\" \y"`: {"sh", "-c", `echo "x" \y`},
		`a\ b 'c d'"e"`:         {"a b", "c de"},
	} {
		if got, err := SplitCommand(in); err != nil || !slices.Equal(got, want) {
			t.Errorf("SplitCommand(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{`'open`, `"open`} {
		if _, err := SplitCommand(bad); err == nil {
			t.Errorf("SplitCommand(%q) accepted", bad)
		}
	}
}
