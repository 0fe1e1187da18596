package logs

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Pattern is a compiled CloudWatch Logs filter pattern.
type Pattern interface {
	Match(msg string) bool
}

// ParsePattern compiles a filter pattern: terms and "quoted phrases" (all
// must occur), ?alternatives (one must), -exclusions (none may), a JSON
// pattern such as { $.level = "error" && $.ms > 100 }, a space-delimited
// pattern such as [ip, user, ..., status = 4*, bytes > 1000], or %regex%.
func ParsePattern(src string) (Pattern, error) {
	s := strings.TrimSpace(src)
	switch {
	case s == "":
		return matchAll{}, nil
	case s[0] == '{':
		return parseJSONPattern(s)
	case s[0] == '[':
		return parseSpacePattern(s)
	case len(s) >= 2 && s[0] == '%' && s[len(s)-1] == '%':
		re, err := regexp.Compile(s[1 : len(s)-1])
		if err != nil {
			return nil, fmt.Errorf("invalid regular expression: %v", err)
		}
		return regexPattern{re}, nil
	}
	return parseTerms(s)
}

type matchAll struct{}

func (matchAll) Match(string) bool { return true }

type regexPattern struct{ re *regexp.Regexp }

func (p regexPattern) Match(msg string) bool { return p.re.MatchString(msg) }

type termPattern struct {
	all, any, none []string
}

func parseTerms(s string) (Pattern, error) {
	var p termPattern
	for i := 0; i < len(s); {
		if s[i] == ' ' || s[i] == '\t' {
			i++
			continue
		}
		kind := byte(0)
		if s[i] == '?' || s[i] == '-' {
			kind = s[i]
			i++
		}
		var term string
		if i < len(s) && s[i] == '"' {
			end, t, err := quoted(s, i)
			if err != nil {
				return nil, err
			}
			term, i = t, end
		} else {
			j := i
			for j < len(s) && s[j] != ' ' && s[j] != '\t' {
				if s[j] == '"' {
					return nil, errors.New("a quote may only start a term")
				}
				j++
			}
			term, i = s[i:j], j
		}
		if term == "" {
			return nil, errors.New("empty term")
		}
		switch kind {
		case '?':
			p.any = append(p.any, term)
		case '-':
			p.none = append(p.none, term)
		default:
			p.all = append(p.all, term)
		}
	}
	return p, nil
}

// quoted reads the "..." starting at s[i], with \" and \\ escapes.
func quoted(s string, i int) (end int, text string, err error) {
	var b strings.Builder
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			if j+1 < len(s) {
				j++
			}
			b.WriteByte(s[j])
		case '"':
			return j + 1, b.String(), nil
		default:
			b.WriteByte(s[j])
		}
	}
	return 0, "", errors.New("unterminated quoted term")
}

func (p termPattern) Match(msg string) bool {
	for _, t := range p.all {
		if !hasTerm(msg, t) {
			return false
		}
	}
	for _, t := range p.none {
		if hasTerm(msg, t) {
			return false
		}
	}
	if len(p.any) == 0 {
		return true
	}
	for _, t := range p.any {
		if hasTerm(msg, t) {
			return true
		}
	}
	return false
}

// hasTerm finds term in msg as a whole term: where the term begins or ends
// with a letter or digit, the message must not continue it with another, so
// AUTHORIZED does not match UNAUTHORIZED (that takes %AUTHORIZED%).
func hasTerm(msg, term string) bool {
	first, _ := utf8.DecodeRuneInString(term)
	last, _ := utf8.DecodeLastRuneInString(term)
	for off := 0; ; {
		i := strings.Index(msg[off:], term)
		if i < 0 {
			return false
		}
		i += off
		before, _ := utf8.DecodeLastRuneInString(msg[:i])
		after, _ := utf8.DecodeRuneInString(msg[i+len(term):])
		if (i == 0 || !isWord(first) || !isWord(before)) && (i+len(term) == len(msg) || !isWord(last) || !isWord(after)) {
			return true
		}
		off = i + 1
	}
}

func isWord(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }

// JSON patterns.

type jsonPattern struct{ expr jexpr }

func (p jsonPattern) Match(msg string) bool {
	// Most lines of a mixed group are not JSON: no need to parse them.
	if t := strings.TrimLeft(msg, " \t\r\n"); t == "" || t[0] != '{' && t[0] != '[' {
		return false
	}
	var doc any
	d := json.NewDecoder(strings.NewReader(msg))
	d.UseNumber()
	if d.Decode(&doc) != nil {
		return false
	}
	return p.expr.eval(doc)
}

type jexpr interface{ eval(doc any) bool }

type jand struct{ l, r jexpr }
type jor struct{ l, r jexpr }

func (e jand) eval(d any) bool { return e.l.eval(d) && e.r.eval(d) }
func (e jor) eval(d any) bool  { return e.l.eval(d) || e.r.eval(d) }

type jcmp struct {
	path []pathStep
	op   string // = != < > <= >=, or IS, EXISTS, NOT EXISTS
	str  *string
	num  *float64
	re   *regexp.Regexp
	lit  string // for IS: TRUE, FALSE, NULL
}

type pathStep struct {
	key   string
	index int // -1: a key
}

func parseJSONPattern(s string) (Pattern, error) {
	if s[len(s)-1] != '}' {
		return nil, errors.New("a JSON pattern ends with }")
	}
	p := &jparser{toks: nil}
	if err := p.lex(s[1 : len(s)-1]); err != nil {
		return nil, err
	}
	e, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.i != len(p.toks) {
		return nil, fmt.Errorf("unexpected %q", p.toks[p.i].text)
	}
	return jsonPattern{e}, nil
}

type jtok struct {
	kind byte // 'p' path, 's' string, 'n' number, 'w' word, 'o' operator
	text string
}

type jparser struct {
	toks []jtok
	i    int
}

func (p *jparser) lex(s string) error {
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			i++
		case c == '$':
			j := i + 1
			for j < len(s) && (isPathByte(s[j])) {
				j++
			}
			p.toks = append(p.toks, jtok{'p', s[i:j]})
			i = j
		case c == '"':
			end, t, err := quoted(s, i)
			if err != nil {
				return err
			}
			p.toks = append(p.toks, jtok{'s', t})
			i = end
		case strings.HasPrefix(s[i:], "&&") || strings.HasPrefix(s[i:], "||") || strings.HasPrefix(s[i:], "!=") || strings.HasPrefix(s[i:], "<=") || strings.HasPrefix(s[i:], ">="):
			p.toks = append(p.toks, jtok{'o', s[i : i+2]})
			i += 2
		case strings.IndexByte("=<>()", c) >= 0:
			p.toks = append(p.toks, jtok{'o', s[i : i+1]})
			i++
		case c == '%':
			j := strings.IndexByte(s[i+1:], '%')
			if j < 0 {
				return errors.New("unterminated %regular expression%")
			}
			p.toks = append(p.toks, jtok{'r', s[i+1 : i+1+j]})
			i += j + 2
		case strings.IndexByte("!&|", c) < 0:
			// A bare value: a number if it reads as one, else a string
			// such as 123.123.*, /api or ERROR.
			j := i
			for j < len(s) && s[j] != ' ' && s[j] != '\t' && s[j] != '\n' && strings.IndexByte("=<>!&|()", s[j]) < 0 {
				j++
			}
			kind := byte('w')
			if _, err := strconv.ParseFloat(s[i:j], 64); err == nil {
				kind = 'n'
			}
			p.toks = append(p.toks, jtok{kind, s[i:j]})
			i = j
		default:
			return fmt.Errorf("unexpected %q", string(c))
		}
	}
	return nil
}

func isPathByte(c byte) bool {
	return c == '.' || c == '[' || c == ']' || c == '_' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func (p *jparser) peek() *jtok {
	if p.i < len(p.toks) {
		return &p.toks[p.i]
	}
	return nil
}

func (p *jparser) or() (jexpr, error) {
	l, err := p.and()
	if err != nil {
		return nil, err
	}
	for t := p.peek(); t != nil && t.kind == 'o' && t.text == "||"; t = p.peek() {
		p.i++
		r, err := p.and()
		if err != nil {
			return nil, err
		}
		l = jor{l, r}
	}
	return l, nil
}

func (p *jparser) and() (jexpr, error) {
	l, err := p.term()
	if err != nil {
		return nil, err
	}
	for t := p.peek(); t != nil && t.kind == 'o' && t.text == "&&"; t = p.peek() {
		p.i++
		r, err := p.term()
		if err != nil {
			return nil, err
		}
		l = jand{l, r}
	}
	return l, nil
}

func (p *jparser) term() (jexpr, error) {
	t := p.peek()
	if t == nil {
		return nil, errors.New("incomplete JSON pattern")
	}
	if t.kind == 'o' && t.text == "(" {
		p.i++
		e, err := p.or()
		if err != nil {
			return nil, err
		}
		if t := p.peek(); t == nil || t.text != ")" {
			return nil, errors.New("missing )")
		}
		p.i++
		return e, nil
	}
	if t.kind != 'p' {
		return nil, fmt.Errorf("expected a selector such as $.field, got %q", t.text)
	}
	path, err := parsePath(t.text)
	if err != nil {
		return nil, err
	}
	p.i++
	c := &jcmp{path: path}
	op := p.peek()
	if op == nil {
		return nil, errors.New("a selector needs a comparison")
	}
	p.i++
	switch {
	case op.kind == 'w' && op.text == "IS":
		v := p.peek()
		if v == nil || v.kind != 'w' || (v.text != "TRUE" && v.text != "FALSE" && v.text != "NULL") {
			return nil, errors.New("IS takes TRUE, FALSE or NULL")
		}
		p.i++
		c.op, c.lit = "IS", v.text
		return c, nil
	case op.kind == 'w' && op.text == "NOT":
		if v := p.peek(); v == nil || v.text != "EXISTS" {
			return nil, errors.New("NOT takes EXISTS")
		}
		p.i++
		c.op = "NOT EXISTS"
		return c, nil
	case op.kind == 'w' && op.text == "EXISTS":
		c.op = "EXISTS"
		return c, nil
	case op.kind == 'o' && strings.Contains("= != < > <= >=", op.text) && op.text != "(" && op.text != ")":
		c.op = op.text
	default:
		return nil, fmt.Errorf("unexpected %q after a selector", op.text)
	}
	v := p.peek()
	if v == nil {
		return nil, errors.New("a comparison needs a value")
	}
	p.i++
	switch v.kind {
	case 's', 'w':
		if c.op != "=" && c.op != "!=" {
			return nil, fmt.Errorf("%s compares numbers, not strings", c.op)
		}
		str := v.text
		c.str = &str
	case 'r':
		if c.op != "=" && c.op != "!=" {
			return nil, fmt.Errorf("%s compares numbers, not a regular expression", c.op)
		}
		re, err := regexp.Compile(v.text)
		if err != nil {
			return nil, fmt.Errorf("invalid regular expression: %v", err)
		}
		c.re = re
	case 'n':
		f, err := strconv.ParseFloat(v.text, 64)
		if err != nil || math.IsInf(f, 0) {
			return nil, fmt.Errorf("invalid number %q", v.text)
		}
		c.num = &f
	default:
		return nil, fmt.Errorf("unexpected %q as a value", v.text)
	}
	return c, nil
}

func parsePath(s string) ([]pathStep, error) {
	var out []pathStep
	rest := s[1:]
	for rest != "" {
		switch rest[0] {
		case '.':
			j := 1
			for j < len(rest) && rest[j] != '.' && rest[j] != '[' {
				j++
			}
			if j == 1 {
				return nil, fmt.Errorf("invalid selector %q", s)
			}
			out = append(out, pathStep{key: rest[1:j], index: -1})
			rest = rest[j:]
		case '[':
			j := strings.IndexByte(rest, ']')
			if j < 0 {
				return nil, fmt.Errorf("invalid selector %q", s)
			}
			n, err := strconv.Atoi(rest[1:j])
			if err != nil || n < 0 {
				return nil, fmt.Errorf("invalid array index in %q", s)
			}
			out = append(out, pathStep{index: n})
			rest = rest[j+1:]
		default:
			return nil, fmt.Errorf("invalid selector %q", s)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("invalid selector %q", s)
	}
	return out, nil
}

func (c *jcmp) eval(doc any) bool {
	v, ok := lookup(doc, c.path)
	switch c.op {
	case "EXISTS":
		return ok
	case "NOT EXISTS":
		return !ok
	case "IS":
		switch c.lit {
		case "NULL":
			return ok && v == nil
		case "TRUE":
			return v == true
		default:
			return v == false
		}
	}
	if !ok {
		return false
	}
	if c.str != nil || c.re != nil {
		var s string
		switch x := v.(type) {
		case string:
			s = x
		case json.Number:
			s = x.String()
		case bool:
			s = strconv.FormatBool(x)
		default:
			return false
		}
		if c.re != nil {
			return c.re.MatchString(s) == (c.op == "=")
		}
		eq := wildcard(*c.str, s)
		return eq == (c.op == "=")
	}
	n, isNum := v.(json.Number)
	if !isNum {
		return c.op == "!="
	}
	f, err := n.Float64()
	if err != nil {
		return false
	}
	switch c.op {
	case "=":
		return f == *c.num
	case "!=":
		return f != *c.num
	case "<":
		return f < *c.num
	case ">":
		return f > *c.num
	case "<=":
		return f <= *c.num
	default:
		return f >= *c.num
	}
}

func lookup(doc any, path []pathStep) (any, bool) {
	for _, st := range path {
		if st.index >= 0 {
			a, ok := doc.([]any)
			if !ok || st.index >= len(a) {
				return nil, false
			}
			doc = a[st.index]
			continue
		}
		m, ok := doc.(map[string]any)
		if !ok {
			return nil, false
		}
		if doc, ok = m[st.key]; !ok {
			return nil, false
		}
	}
	return doc, true
}

// wildcard matches s against a pattern where * stands for any text.
func wildcard(pat, s string) bool {
	parts := strings.Split(pat, "*")
	if len(parts) == 1 {
		return pat == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, parts[len(parts)-1])
}
