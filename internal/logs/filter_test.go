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
	for _, s := range []string{"", "ERROR", `"a b" ?c -d`, `{ $.a.b[0] = "x*" && ($.n >= -1.5e3 || $.z NOT EXISTS) }`, "%ab+c%", `{ $.a IS NULL }`,
		`[ip, user, ..., status = 4* || status = %5..%, bytes > 1000]`, `[..., a = "x*", ...]`, `{ $.ip != 10.0.* }`} {
		f.Add(s, `{"a":{"b":["xy"]},"n":3}`)
		f.Add(s, `1.2.3.4 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 404 2048`)
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

// TestSpacePattern runs the space-delimited forms CloudWatch documents over
// Apache-style access log lines.
func TestSpacePattern(t *testing.T) {
	msgs := []string{
		`127.0.0.1 - frank [10/Oct/2000:13:25:15 -0700] "GET /apache_pb.gif HTTP/1.0" 200 1534`,
		`127.0.0.1 - frank [10/Oct/2000:13:35:22 -0700] "GET /apache_pb.gif HTTP/1.0" 500 5032`,
		`127.0.0.1 - frank [10/Oct/2000:13:50:35 -0700] "GET /index.html HTTP/1.0" 404 -`,
		`10.0.0.7 - alice [10/Oct/2000:13:55:36 -0700] "POST /login HTTP/1.1" 401 128`,
		`just three words`,
	}
	cases := []struct{ pattern, want string }{
		{`[ip, user, username, timestamp, request, status_code, bytes]`, "0123"},
		{`[ip, user, username, timestamp, request, status_code = 4*, bytes]`, "23"},
		{`[ip, user, username, timestamp, request = "*html*", status_code, bytes]`, "2"},
		{`[ip, user, username, timestamp, request = *html*, status_code, bytes]`, "2"},
		{`[ip, user, username, timestamp, request, status_code = 404 || status_code = 500, bytes]`, "12"},
		{`[ip, user, username, timestamp, request, status_code != 200, bytes]`, "123"},
		{`[..., status_code, bytes > 1000]`, "01"},
		{`[..., bytes = -]`, "2"},
		{`[ip = 127.0.0.1, ...]`, "012"},
		{`[ip != 127.0.0.*, ...]`, "34"},
		{`[ip, user, ..., status_code >= 400 && status_code < 500, bytes]`, "23"},
		{`[ip, user, username, timestamp = %13:5[0-9]%, ...]`, "23"},
		{`[ip, user, username, timestamp, request, status_code]`, ""},
		{`[..., username = alice, ...]`, "3"},
		{`[..., request = "POST *", ...]`, "3"},
		{`[a, b, c]`, "4"},
		{`[a, ...]`, "01234"},
		{`[...]`, "01234"},
		{`[ ip , ... , bytes <= 1534 ]`, "03"},
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
	for _, bad := range []string{`[ip, ip]`, `[ip, user = ]`, `[ip, bytes > abc]`, `[ip = 1 && y = 2]`, `[ip`, `[]`, `[ip,]`,
		`[..., a, ..., b, ...]`, `[ip, user &&]`, `[ip = "open]`, `[ip = %(%]`, `[1ip]`, `[ip = 1 user = 2]`, `[ip > "x"]`, `[ip = %abc]`} {
		if _, err := ParsePattern(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestJSONPatternValues: bare strings with wildcards and regular
// expressions as JSON pattern values.
func TestJSONPatternValues(t *testing.T) {
	msg := `{"sourceIPAddress":"123.123.0.9","level":"error","code":"E42"}`
	for pattern, want := range map[string]bool{
		`{ $.sourceIPAddress = 123.123.* }`:         true,
		`{ $.sourceIPAddress != 123.123.* }`:        false,
		`{ $.level = %^err(or)?$% }`:                true,
		`{ $.code = %E[0-9]+% && $.level = error }`: true,
		`{ $.code != %E[0-9]+% }`:                   false,
	} {
		p, err := ParsePattern(pattern)
		if err != nil {
			t.Errorf("%q: %v", pattern, err)
			continue
		}
		if got := p.Match(msg); got != want {
			t.Errorf("%q: %v, want %v", pattern, got, want)
		}
	}
	for _, bad := range []string{`{ $.a > %x% }`, `{ $.a = %x }`, `{ $.a = %(% }`} {
		if _, err := ParsePattern(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
