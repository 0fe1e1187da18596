package billing

import (
	"fmt"
	"slices"
	"strings"
)

// Filter is Cost Explorer's Expression: exactly one of its fields is set.
type Filter struct {
	And            []*Filter    `json:"And,omitempty"`
	Or             []*Filter    `json:"Or,omitempty"`
	Not            *Filter      `json:"Not,omitempty"`
	Dimensions     *ValueFilter `json:"Dimensions,omitempty"`
	Tags           *ValueFilter `json:"Tags,omitempty"`
	CostCategories *ValueFilter `json:"CostCategories,omitempty"`
}

// ValueFilter is DimensionValues or TagValues.
type ValueFilter struct {
	Key          *string  `json:"Key,omitempty"`
	Values       []string `json:"Values,omitempty"`
	MatchOptions []string `json:"MatchOptions,omitempty"`
}

// FilterDimensions are the Cost Explorer dimensions Gantry can filter and
// group on.
var FilterDimensions = []string{"SERVICE", "USAGE_TYPE", "LINKED_ACCOUNT", "REGION"}

var matchOptions = []string{"EQUALS", "ABSENT", "STARTS_WITH", "ENDS_WITH", "CONTAINS", "CASE_SENSITIVE", "CASE_INSENSITIVE", "GREATER_THAN_OR_EQUAL"}

// Validate checks the expression as Cost Explorer does; path names the
// field in messages (Filter, Filter.And[0], ...).
func (f *Filter) Validate(path string) error {
	if f == nil {
		return fmt.Errorf("%s: the expression must not be null", path)
	}
	n := 0
	if f.And != nil {
		n++
	}
	if f.Or != nil {
		n++
	}
	if f.Not != nil {
		n++
	}
	if f.Dimensions != nil {
		n++
	}
	if f.Tags != nil {
		n++
	}
	if f.CostCategories != nil {
		n++
	}
	if n != 1 {
		return fmt.Errorf("%s: Expression must have exactly one of And, Or, Not, Dimensions, Tags or CostCategories, found %d", path, n)
	}
	switch {
	case f.And != nil || f.Or != nil:
		list, op := f.And, "And"
		if f.Or != nil {
			list, op = f.Or, "Or"
		}
		if len(list) < 2 {
			return fmt.Errorf("%s.%s: needs at least 2 expressions", path, op)
		}
		for i, sub := range list {
			if err := sub.Validate(fmt.Sprintf("%s.%s[%d]", path, op, i)); err != nil {
				return err
			}
		}
	case f.Not != nil:
		return f.Not.Validate(path + ".Not")
	case f.CostCategories != nil:
		return fmt.Errorf("%s.CostCategories: Gantry has no cost categories", path)
	case f.Dimensions != nil:
		v := f.Dimensions
		if v.Key == nil || !slices.Contains(FilterDimensions, *v.Key) {
			return fmt.Errorf("%s.Dimensions.Key: dimension %q is not supported; use one of %s", path, deref(v.Key), strings.Join(FilterDimensions, ", "))
		}
		if len(v.Values) == 0 {
			return fmt.Errorf("%s.Dimensions.Values: at least one value is required for dimension %s", path, *v.Key)
		}
		if slices.Contains(v.MatchOptions, "ABSENT") {
			return fmt.Errorf("%s.Dimensions.MatchOptions: ABSENT is only valid for tags and cost categories", path)
		}
		return checkMatch(path+".Dimensions.MatchOptions", v.MatchOptions)
	case f.Tags != nil:
		v := f.Tags
		if v.Key == nil || *v.Key == "" {
			return fmt.Errorf("%s.Tags.Key: a tag key is required", path)
		}
		return checkMatch(path+".Tags.MatchOptions", v.MatchOptions)
	}
	return nil
}

func checkMatch(path string, opts []string) error {
	for _, o := range opts {
		if !slices.Contains(matchOptions, o) {
			return fmt.Errorf("%s: unknown match option %q; valid: %s", path, o, strings.Join(matchOptions, ", "))
		}
		if o == "GREATER_THAN_OR_EQUAL" {
			return fmt.Errorf("%s: GREATER_THAN_OR_EQUAL is not supported by Gantry", path)
		}
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func (f *Filter) perLine() bool {
	switch {
	case f == nil:
		return false
	case f.Dimensions != nil:
		return deref(f.Dimensions.Key) == "USAGE_TYPE"
	case f.Not != nil:
		return f.Not.perLine()
	}
	for _, s := range append(slices.Clone(f.And), f.Or...) {
		if s.perLine() {
			return true
		}
	}
	return false
}

type compiled func(e *entry, ln *lineE) bool

// matcher tests a string against a ValueFilter's values and options.
func matcher(v *ValueFilter) func(string) bool {
	fold := slices.Contains(v.MatchOptions, "CASE_INSENSITIVE")
	mode := "EQUALS"
	for _, o := range v.MatchOptions {
		switch o {
		case "STARTS_WITH", "ENDS_WITH", "CONTAINS", "EQUALS":
			mode = o
		}
	}
	vals := slices.Clone(v.Values)
	if fold {
		for i := range vals {
			vals[i] = strings.ToLower(vals[i])
		}
	}
	return func(s string) bool {
		if fold {
			s = strings.ToLower(s)
		}
		for _, want := range vals {
			switch mode {
			case "EQUALS":
				if s == want {
					return true
				}
			case "STARTS_WITH":
				if strings.HasPrefix(s, want) {
					return true
				}
			case "ENDS_WITH":
				if strings.HasSuffix(s, want) {
					return true
				}
			case "CONTAINS":
				if strings.Contains(s, want) {
					return true
				}
			}
		}
		return false
	}
}

// compile turns a validated filter into a predicate over the ledger's
// entries (ln is set when the filter looks at usage types). Matches are
// decided once per interned string, so a million entries cost little.
func (f *Filter) compile(l *Ledger) compiled {
	switch {
	case f.And != nil:
		subs := make([]compiled, len(f.And))
		for i, s := range f.And {
			subs[i] = s.compile(l)
		}
		return func(e *entry, ln *lineE) bool {
			for _, s := range subs {
				if !s(e, ln) {
					return false
				}
			}
			return true
		}
	case f.Or != nil:
		subs := make([]compiled, len(f.Or))
		for i, s := range f.Or {
			subs[i] = s.compile(l)
		}
		return func(e *entry, ln *lineE) bool {
			for _, s := range subs {
				if s(e, ln) {
					return true
				}
			}
			return false
		}
	case f.Not != nil:
		sub := f.Not.compile(l)
		return func(e *entry, ln *lineE) bool { return !sub(e, ln) }
	case f.Dimensions != nil:
		m := matcher(f.Dimensions)
		ok := l.matchTable(m)
		switch *f.Dimensions.Key {
		case "SERVICE":
			svc := m(AWSServiceName)
			return func(*entry, *lineE) bool { return svc }
		case "LINKED_ACCOUNT":
			return func(e *entry, _ *lineE) bool { return ok[e.account] }
		case "REGION":
			return func(e *entry, _ *lineE) bool { return ok[e.region] }
		case "USAGE_TYPE":
			return func(_ *entry, ln *lineE) bool { return ln != nil && ok[ln.ut] }
		}
	case f.Tags != nil:
		key, known := l.ids[*f.Tags.Key]
		absent := slices.Contains(f.Tags.MatchOptions, "ABSENT")
		m := matcher(f.Tags)
		ok := l.matchTable(m)
		return func(e *entry, _ *lineE) bool {
			if known {
				for i := 0; i < len(e.tags); i += 2 {
					if e.tags[i] == key {
						return ok[e.tags[i+1]]
					}
				}
			}
			// Without the tag: ABSENT matches, and so does an empty value
			// in Values (Cost Explorer's "no tag" group).
			return absent || (len(f.Tags.Values) > 0 && m(""))
		}
	}
	return func(*entry, *lineE) bool { return false }
}

func (l *Ledger) matchTable(m func(string) bool) []bool {
	out := make([]bool, len(l.strs))
	for i, s := range l.strs {
		out[i] = m(s)
	}
	return out
}
