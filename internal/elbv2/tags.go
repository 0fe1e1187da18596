package elbv2

import (
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/state"
)

const (
	// maxTags is ELBv2's quota of tags per resource.
	maxTags = 50
	// maxTagARNs is how many resources one AddTags, RemoveTags or
	// DescribeTags call may name.
	maxTagARNs = 20
)

// tagRE is the model's pattern for tag keys and values.
var tagRE = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$`)

func checkTagKey(k string) error {
	switch {
	case k == "":
		return validation("Tag keys must not be empty")
	case utf8.RuneCountInString(k) > 128:
		return validation("1 validation error detected: Value '%s' at 'tags.member.key' failed to satisfy constraint: Member must have length less than or equal to 128", k)
	case !tagRE.MatchString(k):
		return validation("1 validation error detected: Value '%s' at 'tags.member.key' failed to satisfy constraint: Member must satisfy regular expression pattern: ^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)$", k)
	case strings.HasPrefix(strings.ToLower(k), "aws:"):
		return validation("Tag key '%s' is not valid: keys beginning with 'aws:' are reserved for AWS use", k)
	}
	return nil
}

func checkTag(t tag) error {
	if err := checkTagKey(t.Key); err != nil {
		return err
	}
	if utf8.RuneCountInString(t.Value) > 256 {
		return validation("1 validation error detected: Value '%s' at 'tags.member.value' failed to satisfy constraint: Member must have length less than or equal to 256", t.Value)
	}
	if !tagRE.MatchString(t.Value) {
		return validation("1 validation error detected: Value '%s' at 'tags.member.value' failed to satisfy constraint: Member must satisfy regular expression pattern: ^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)$", t.Value)
	}
	return nil
}

func tooManyTags(arn string) error {
	return awsapi.Errorf("TooManyTags", "The quota for the number of tags that can be assigned to resource '%s' has been reached (%d)", arn, maxTags)
}

// mergeTags sets add's tags on have, replacing the values of keys it has.
func mergeTags(have []tag, add []tag) []tag {
	for _, t := range add {
		if i := slices.IndexFunc(have, func(x tag) bool { return x.Key == t.Key }); i >= 0 {
			have[i].Value = t.Value
		} else {
			have = append(have, t)
		}
	}
	return have
}

// editTags loads one resource, lets edit change its tags and, when write,
// stores it.
func editTags[T any](tx state.Tx, kind, arn string, notFound error, tagsOf func(*T) *[]tag, edit func(*[]tag) error, write bool) error {
	var v T
	ok, err := tx.Get(kind, arn, &v)
	if err != nil {
		return err
	}
	if !ok {
		return notFound
	}
	if err := edit(tagsOf(&v)); err != nil || !write {
		return err
	}
	return tx.Put(kind, arn, &v)
}

// withTags finds the resource an ARN names, whatever its kind, and runs
// edit over its tags (nil edit: read them into *out).
func withTags(tx state.Tx, r *request, arn string, edit func(*[]tag) error, out *[]tag) error {
	write := edit != nil
	if !write {
		edit = func(ts *[]tag) error { *out = slices.Clone(*ts); return nil }
	}
	prefix := arnPrefix(r.account, r.region)
	rest, ok := strings.CutPrefix(arn, prefix)
	switch {
	case !ok && !strings.HasPrefix(arn, "arn:aws:elasticloadbalancing:"):
		return validation("'%s' is not a valid Elastic Load Balancing resource ARN", arn)
	case strings.HasPrefix(rest, "loadbalancer/") || (!ok && strings.Contains(arn, ":loadbalancer/")):
		return editTags(tx, kindLB, arn, awsapi.Errorf("LoadBalancerNotFound", "Load balancer '%s' not found", arn),
			func(v *lbRecord) *[]tag { return &v.Tags }, edit, write)
	case strings.HasPrefix(rest, "targetgroup/") || (!ok && strings.Contains(arn, ":targetgroup/")):
		return editTags(tx, kindTG, arn, awsapi.Errorf("TargetGroupNotFound", "Target group '%s' not found", arn),
			func(v *tgRecord) *[]tag { return &v.Tags }, edit, write)
	case strings.HasPrefix(rest, "listener-rule/") || (!ok && strings.Contains(arn, ":listener-rule/")):
		return editTags(tx, kindRule, arn, awsapi.Errorf("RuleNotFound", "Rule '%s' not found", arn),
			func(v *ruleRecord) *[]tag { return &v.Tags }, edit, write)
	case strings.HasPrefix(rest, "listener/") || (!ok && strings.Contains(arn, ":listener/")):
		return editTags(tx, kindListener, arn, awsapi.Errorf("ListenerNotFound", "Listener '%s' not found", arn),
			func(v *listenerRecord) *[]tag { return &v.Tags }, edit, write)
	}
	return validation("'%s' is not a valid Elastic Load Balancing resource ARN", arn)
}

func (r *request) resourceARNs() ([]string, error) {
	arns := r.list("ResourceArns")
	if len(arns) == 0 {
		return nil, validation("1 validation error detected: Value null at 'resourceArns' failed to satisfy constraint: Member must not be null")
	}
	if len(arns) > maxTagARNs {
		return nil, validation("1 validation error detected: Value at 'resourceArns' failed to satisfy constraint: Member must have length less than or equal to %d", maxTagARNs)
	}
	return arns, nil
}

func (s *Service) addTags(r *request) (any, error) {
	arns, err := r.resourceARNs()
	if err != nil {
		return nil, err
	}
	add, err := r.tags()
	if err != nil {
		return nil, err
	}
	if len(add) == 0 {
		return nil, validation("1 validation error detected: Value null at 'tags' failed to satisfy constraint: Member must not be null")
	}
	return s.editTags(r, arns, func(arn string, ts *[]tag) error {
		*ts = mergeTags(*ts, add)
		if len(*ts) > maxTags {
			return tooManyTags(arn)
		}
		return nil
	})
}

func (s *Service) removeTags(r *request) (any, error) {
	arns, err := r.resourceARNs()
	if err != nil {
		return nil, err
	}
	keys := r.list("TagKeys")
	if len(keys) == 0 {
		return nil, validation("1 validation error detected: Value null at 'tagKeys' failed to satisfy constraint: Member must not be null")
	}
	for _, k := range keys {
		if k == "" || utf8.RuneCountInString(k) > 128 {
			return nil, validation("1 validation error detected: Value '%s' at 'tagKeys' failed to satisfy constraint: Member must have length between 1 and 128", k)
		}
	}
	return s.editTags(r, arns, func(_ string, ts *[]tag) error {
		*ts = slices.DeleteFunc(*ts, func(t tag) bool { return slices.Contains(keys, t.Key) })
		return nil
	})
}

// editTags changes every named resource's tags in one transaction, so a
// bad ARN or too many tags on one leaves them all as they were.
func (s *Service) editTags(r *request, arns []string, edit func(arn string, ts *[]tag) error) (any, error) {
	err := s.Store.Update(r.ctx, func(tx state.Tx) error {
		for _, arn := range arns {
			if err := withTags(tx, r, arn, func(ts *[]tag) error { return edit(arn, ts) }, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

type tagXML struct {
	Key   string
	Value string
}

type tagDescXML struct {
	ResourceArn string
	Tags        []tagXML `xml:"Tags>member"`
}

func (s *Service) describeTags(r *request) (any, error) {
	arns, err := r.resourceARNs()
	if err != nil {
		return nil, err
	}
	out := struct {
		TagDescriptions []tagDescXML `xml:"TagDescriptions>member"`
	}{TagDescriptions: []tagDescXML{}}
	err = s.Store.View(r.ctx, func(tx state.Tx) error {
		for _, arn := range arns {
			var ts []tag
			if err := withTags(tx, r, arn, nil, &ts); err != nil {
				return err
			}
			d := tagDescXML{ResourceArn: arn, Tags: []tagXML{}}
			for _, t := range ts {
				d.Tags = append(d.Tags, tagXML(t))
			}
			out.TagDescriptions = append(out.TagDescriptions, d)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
