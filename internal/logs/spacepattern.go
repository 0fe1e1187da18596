package logs

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// Space-delimited patterns name the fields of a line and put conditions on
// them:
//
//	[ip, user, username, timestamp, request = "*html*", status_code = 4*, bytes > 1000]
//
// A line's fields are separated by spaces; text in "..." or [...] is one
// field (without its quotes or brackets). "..." in the pattern stands for
// any number of fields. Conditions compare with = != < <= > >=, join with
// && and ||, and may name any field of the pattern. Values are numbers,
// strings (bare or quoted, * as a wildcard) or %regular expressions%.

type spacePattern struct {
	fields []spaceField
	conds  []sexpr // one per field that has conditions
	named  int     // fields that are not ellipses
}

type spaceField struct {
	name     string
	ellipsis bool
}

type sexpr interface {
	eval(vals map[string]string) bool
}

type sand struct{ l, r sexpr }
type sor struct{ l, r sexpr }

func (e sand) eval(v map[string]string) bool { return e.l.eval(v) && e.r.eval(v) }
func (e sor) eval(v map[string]string) bool  { return e.l.eval(v) || e.r.eval(v) }

// scond compares one field with a value.
type scond struct {
	field string
	op    string
	num   *float64 // a numeric value
	str   string   // a string value, * wildcards
	re    *regexp.Regexp
}

func (c scond) eval(vals map[string]string) bool {
	v, ok := vals[c.field]
	if !ok {
		return false
	}
	if c.re != nil {
		return c.re.MatchString(v) == (c.op == "=")
	}
	if c.num != nil {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			// Not a number: only "not equal" holds.
			return c.op == "!="
		}
		switch c.op {
		case "=":
			return f == *c.num
		case "!=":
			return f != *c.num
		case "<":
			return f < *c.num
		case "<=":
			return f <= *c.num
		case ">":
			return f > *c.num
		default:
			return f >= *c.num
		}
	}
	return wildcard(c.str, v) == (c.op == "=")
}

var fieldNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func parseSpacePattern(s string) (Pattern, error) {
	if s[len(s)-1] != ']' {
		return nil, errors.New("a space-delimited pattern ends with ]")
	}
	body := s[1 : len(s)-1]
	parts, err := splitFields(body)
	if err != nil {
		return nil, err
	}
	p := &spacePattern{}
	seen := map[string]bool{}
	ellipses := 0
	var pending []string // conditions, parsed once every name is known
	for _, part := range parts {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, errors.New("empty field in a space-delimited pattern")
		}
		if part == "..." {
			if n := len(p.fields); n > 0 && p.fields[n-1].ellipsis {
				continue // two in a row are one
			}
			if ellipses++; ellipses > 2 {
				return nil, errors.New("a space-delimited pattern may have at most two ellipses (...)")
			}
			p.fields = append(p.fields, spaceField{ellipsis: true})
			continue
		}
		end := 0
		for end < len(part) && (part[end] == '_' || isAlnum(part[end])) {
			end++
		}
		name := part[:end]
		if !fieldNameRe.MatchString(name) {
			return nil, fmt.Errorf("invalid field %q: fields are named with letters, digits and _", part)
		}
		if seen[name] {
			return nil, fmt.Errorf("field %q is named twice", name)
		}
		seen[name] = true
		p.fields = append(p.fields, spaceField{name: name})
		p.named++
		if rest := strings.TrimSpace(part[end:]); rest != "" {
			pending = append(pending, part)
		}
	}
	if len(p.fields) == 0 {
		return nil, errors.New("a space-delimited pattern needs at least one field")
	}
	for _, c := range pending {
		e, err := parseSpaceConds(c, seen)
		if err != nil {
			return nil, err
		}
		p.conds = append(p.conds, e)
	}
	return p, nil
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// splitFields cuts the pattern at commas outside quotes and %regexes%.
func splitFields(s string) ([]string, error) {
	var out []string
	start, inRe := 0, false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			end, _, err := quoted(s, i)
			if err != nil {
				return nil, err
			}
			i = end - 1
		case '%':
			inRe = !inRe
		case ',':
			if !inRe {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	if inRe {
		return nil, errors.New("unterminated %regular expression%")
	}
	return append(out, s[start:]), nil
}

// parseSpaceConds reads `name op value (&& | || name op value)*`.
func parseSpaceConds(s string, names map[string]bool) (sexpr, error) {
	var toks []string
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			i++
		case c == '"':
			end, _, err := quoted(s, i)
			if err != nil {
				return nil, err
			}
			toks = append(toks, s[i:end])
			i = end
		case c == '%':
			j := strings.IndexByte(s[i+1:], '%')
			if j < 0 {
				return nil, errors.New("unterminated %regular expression%")
			}
			toks = append(toks, s[i:i+j+2])
			i += j + 2
		case strings.HasPrefix(s[i:], "&&") || strings.HasPrefix(s[i:], "||") || strings.HasPrefix(s[i:], "!=") || strings.HasPrefix(s[i:], "<=") || strings.HasPrefix(s[i:], ">="):
			toks = append(toks, s[i:i+2])
			i += 2
		case c == '=' || c == '<' || c == '>':
			toks = append(toks, s[i:i+1])
			i++
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" \t=<>!&|\"", rune(s[j])) {
				j++
			}
			if j == i {
				return nil, fmt.Errorf("unexpected %q", s[i:])
			}
			toks = append(toks, s[i:j])
			i = j
		}
	}
	var e sexpr
	join := ""
	for len(toks) > 0 {
		if len(toks) < 3 {
			return nil, fmt.Errorf("incomplete condition %q: a condition is field, operator and value", strings.Join(toks, " "))
		}
		c, err := spaceCond(toks[0], toks[1], toks[2], names)
		if err != nil {
			return nil, err
		}
		toks = toks[3:]
		switch join {
		case "":
			e = c
		case "&&":
			e = sand{e, c}
		default:
			e = sor{e, c}
		}
		if len(toks) == 0 {
			break
		}
		if toks[0] != "&&" && toks[0] != "||" {
			return nil, fmt.Errorf("unexpected %q: conditions are joined with && or ||", toks[0])
		}
		join, toks = toks[0], toks[1:]
		if len(toks) == 0 {
			return nil, fmt.Errorf("a condition must follow %s", join)
		}
	}
	return e, nil
}

func spaceCond(field, op, val string, names map[string]bool) (sexpr, error) {
	if !names[field] {
		return nil, fmt.Errorf("condition on %q, which is not a field of the pattern", field)
	}
	switch op {
	case "=", "!=", "<", "<=", ">", ">=":
	default:
		return nil, fmt.Errorf("unexpected %q: the operators are = != < <= > >=", op)
	}
	c := scond{field: field, op: op}
	numeric := op != "=" && op != "!="
	switch {
	case len(val) >= 2 && val[0] == '%' && val[len(val)-1] == '%':
		if numeric {
			return nil, fmt.Errorf("%s compares numbers, not a regular expression", op)
		}
		re, err := regexp.Compile(val[1 : len(val)-1])
		if err != nil {
			return nil, fmt.Errorf("invalid regular expression: %v", err)
		}
		c.re = re
	case val[0] == '"':
		if numeric {
			return nil, fmt.Errorf("%s compares numbers, not strings", op)
		}
		_, c.str, _ = quoted(val, 0)
	default:
		if f, err := strconv.ParseFloat(val, 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
			c.num = &f
		} else if numeric {
			return nil, fmt.Errorf("%s compares numbers: %q is not one", op, val)
		} else {
			c.str = val
		}
	}
	return c, nil
}

func (p *spacePattern) Match(msg string) bool {
	vals := splitLine(msg)
	if len(vals) < p.named {
		return false
	}
	// Fields before the first ellipsis take the line's first values and
	// fields after the last one its last values; fields between two
	// ellipses may sit anywhere in what is left.
	fs := p.fields
	got := make(map[string]string, p.named)
	for len(fs) > 0 && !fs[0].ellipsis {
		got[fs[0].name], fs, vals = vals[0], fs[1:], vals[1:]
	}
	if len(fs) == 0 {
		return len(vals) == 0 && p.check(got)
	}
	for len(fs) > 0 && !fs[len(fs)-1].ellipsis {
		got[fs[len(fs)-1].name] = vals[len(vals)-1]
		fs, vals = fs[:len(fs)-1], vals[:len(vals)-1]
	}
	mid := fs[1:max(1, len(fs)-1)]
	if len(mid) == 0 {
		return p.check(got)
	}
	for at := 0; at+len(mid) <= len(vals); at++ {
		for i, f := range mid {
			got[f.name] = vals[at+i]
		}
		if p.check(got) {
			return true
		}
	}
	return false
}

func (p *spacePattern) check(got map[string]string) bool {
	for _, c := range p.conds {
		if !c.eval(got) {
			return false
		}
	}
	return true
}

// splitLine cuts a line at spaces, keeping "quoted" and [bracketed] text
// together as one field without its delimiters.
func splitLine(msg string) []string {
	var out []string
	for i := 0; i < len(msg); {
		switch c := msg[i]; {
		case c == ' ' || c == '\t':
			i++
		case c == '"' || c == '[':
			closer := byte('"')
			if c == '[' {
				closer = ']'
			}
			j := strings.IndexByte(msg[i+1:], closer)
			if j < 0 {
				out = append(out, msg[i:])
				return out
			}
			out = append(out, msg[i+1:i+1+j])
			i += j + 2
		default:
			j := i
			for j < len(msg) && msg[j] != ' ' && msg[j] != '\t' {
				j++
			}
			out = append(out, msg[i:j])
			i = j
		}
	}
	return out
}
