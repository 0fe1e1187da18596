package logs

import (
	"strings"
	"testing"
)

func TestPattern(t *testing.T) {
	msgs := []string{
		"ERROR failed to connect",
		"[WARN] UNAUTHORIZED request",
		`{"level":"error","ms":250,"tags":["a","b"],"ok":true,"none":null}`,
		"all fine",
	}
	cases := []struct {
		pattern string
		want    string // indexes of the matching messages
	}{
		{"", "0123"},
		{"ERROR", "0"},
		{"error", "2"}, // case sensitive: only the JSON line has it lower case
		{`"failed to"`, "0"},
		{"?ERROR ?WARN", "01"},
		{"-ERROR", "123"},
		{"AUTHORIZED", ""},
		{"UNAUTHORIZED", "1"},
		{"%AUTHORIZED%", "1"},
		{"%^all%", "3"},
		{`{ $.level = "error" }`, "2"},
		{`{ $.level = "err*" }`, "2"},
		{`{ $.level != "info" }`, "2"},
		{`{ $.ms > 100 && $.ms <= 250 }`, "2"},
		{`{ $.ms < 100 || $.tags[1] = "b" }`, "2"},
		{`{ ($.ms = 1 || $.ok IS TRUE) && $.none IS NULL }`, "2"},
		{`{ $.missing NOT EXISTS }`, "2"},
		{`{ $.tags[5] EXISTS }`, ""},
	}
	for _, c := range cases {
		p, err := ParsePattern(c.pattern)
		if err != nil {
			t.Errorf("%q: %v", c.pattern, err)
			continue
		}
		got := ""
		for i, m := range msgs {
			if p.Match(m) {
				got += string(rune('0' + i))
			}
		}
		if got != c.want {
			t.Errorf("%q matched %q, want %q", c.pattern, got, c.want)
		}
	}
	for _, bad := range []string{`"open`, `{ $.a = }`, `{ $.a > "x" }`, `{ level = 1 }`, `{ $.a = 1`, `%[%`, `-`, `{ ($.a = 1 }`} {
		if _, err := ParsePattern(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// FuzzPattern: any pattern either fails to parse or matches any message
// without panicking.
func FuzzPattern(f *testing.F) {
	for _, s := range []string{"", "ERROR", `"a b" ?c -d`, `{ $.a.b[0] = "x*" && ($.n >= -1.5e3 || $.z NOT EXISTS) }`, "%ab+c%", `{ $.a IS NULL }`} {
		f.Add(s, `{"a":{"b":["xy"]},"n":3}`)
	}
	f.Fuzz(func(t *testing.T, pattern, msg string) {
		p, err := ParsePattern(pattern)
		if err != nil {
			return
		}
		p.Match(msg)
		p.Match(strings.ToUpper(msg))
	})
}
