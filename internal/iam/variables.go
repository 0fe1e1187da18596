package iam

import (
	"strings"
	"unicode/utf8"
)

// Policy variables: ${aws:username} and the like in a Resource (or
// NotResource) and in the values of string and ARN conditions stand for
// the request's value of that condition key, as IAM's policy reference
// describes. Only policies of Version 2012-10-17 have them; in older ones
// the text is literal.
//
//   - The name is any condition key the request carries with one value
//     (case-insensitive, spaces around it ignored): aws:username,
//     aws:userid, aws:PrincipalAccount, aws:PrincipalArn,
//     aws:PrincipalType, aws:SourceIp, aws:CurrentTime, ...
//   - ${key, 'default'} stands for default when the request lacks key;
//     '' inside the quotes is one quote.
//   - ${*}, ${?} and ${$} are a literal '*', '?' and '$'.
//   - A variable with no value and no default leaves the string matching
//     nothing: a Resource naming it does not apply, nor does a condition
//     value (so a negated operator holds).
//   - What a variable stands for is literal text: a '*' in a request value
//     is not a wildcard.
//
// Substitution is one pass: a value or default that looks like a
// variable stays as it is.

// Wildcards in an expanded pattern, kept apart from the literal '*' and
// '?' that variables produce. Decoded runes are never negative.
const (
	anyRun rune = -1
	anyOne rune = -2
)

// expand resolves s against the request's keys. wild says whether '*'
// and '?' written in s are wildcards (Resource, StringLike, Arn*) or text
// (StringEquals). ok is false when a variable has no value.
func expand(s string, ctx map[string][]string, vars, wild bool) (out []rune, ok bool) {
	lit := func(text string) {
		for _, r := range text {
			out = append(out, r)
		}
	}
	for i := 0; i < len(s); {
		if vars && strings.HasPrefix(s[i:], "${") {
			if text, n, found, valid := variable(s[i:], ctx); valid {
				if !found {
					return nil, false
				}
				lit(text)
				i += n
				continue
			}
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case wild && r == '*':
			r = anyRun
		case wild && r == '?':
			r = anyOne
		}
		out = append(out, r)
		i += size
	}
	return out, true
}

// variable reads the variable at the start of s ("${..."): its value, how
// many bytes it took, whether it has a value, and whether it is one at
// all (an unterminated or malformed one is literal text).
func variable(s string, ctx map[string][]string) (text string, n int, found, valid bool) {
	body := s[2:]
	end := strings.IndexAny(body, ",}")
	if end < 0 {
		return "", 0, false, false
	}
	name := strings.TrimSpace(body[:end])
	if name == "" || strings.ContainsAny(name, " \t'{$") && name != "$" {
		return "", 0, false, false
	}
	rest, n := body[end:], 2+end
	def, hasDef := "", false
	if rest[0] == ',' {
		// , 'default' }
		j := 1
		for j < len(rest) && rest[j] == ' ' {
			j++
		}
		if j >= len(rest) || rest[j] != '\'' {
			return "", 0, false, false
		}
		j++
		var b strings.Builder
		for {
			if j >= len(rest) {
				return "", 0, false, false
			}
			if rest[j] == '\'' {
				if j+1 < len(rest) && rest[j+1] == '\'' {
					b.WriteByte('\'')
					j += 2
					continue
				}
				j++
				break
			}
			b.WriteByte(rest[j])
			j++
		}
		for j < len(rest) && rest[j] == ' ' {
			j++
		}
		if j >= len(rest) || rest[j] != '}' {
			return "", 0, false, false
		}
		def, hasDef = b.String(), true
		n += j + 1
	} else {
		n++ // the '}'
	}
	switch name {
	case "*", "?", "$":
		return name, n, true, true
	}
	if v := ctx[strings.ToLower(name)]; len(v) == 1 {
		return v[0], n, true, true
	}
	// Absent, or several values: multivalued keys are no variables.
	return def, n, hasDef, true
}

// matchExpanded matches s against an expanded pattern: anyRun is any run
// of characters (also across ':' and '/'), anyOne any one character.
func matchExpanded(p []rune, s string) bool {
	str := []rune(s)
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(str) {
		switch {
		case pi < len(p) && (p[pi] == anyOne || p[pi] == str[si]):
			pi++
			si++
		case pi < len(p) && p[pi] == anyRun:
			star, mark = pi, si
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == anyRun {
		pi++
	}
	return pi == len(p)
}

// matchPolicyString matches s against pattern as a Resource or a like
// condition value does.
func matchPolicyString(pattern, s string, ctx map[string][]string, vars bool) bool {
	if !vars || !strings.Contains(pattern, "${") {
		return Wildcard(pattern, s)
	}
	p, ok := expand(pattern, ctx, true, true)
	return ok && matchExpanded(p, s)
}

// resolveLiteral is a policy value with its variables resolved, for the
// operators that compare whole strings.
func resolveLiteral(v string, ctx map[string][]string, vars bool) (string, bool) {
	if !vars || !strings.Contains(v, "${") {
		return v, true
	}
	p, ok := expand(v, ctx, true, false)
	return string(p), ok
}
