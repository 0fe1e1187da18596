package ec2

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/state"
)

// maxTags is EC2's limit of tags per resource.
const maxTags = 50

func checkTag(t Tag) error {
	if n := utf8.RuneCountInString(t.Key); n == 0 || n > 127 {
		return awsapi.Errorf("InvalidParameterValue", "Tag key must be between 1 and 127 characters long: '%s'", t.Key)
	}
	if strings.HasPrefix(strings.ToLower(t.Key), "aws:") {
		return awsapi.Errorf("InvalidParameterValue", "Tag keys starting with 'aws:' are reserved for internal use")
	}
	if utf8.RuneCountInString(t.Value) > 255 {
		return awsapi.Errorf("InvalidParameterValue", "Tag value for key '%s' must be at most 255 characters long", t.Key)
	}
	return nil
}

// tagList reads prefix.N.Key / prefix.N.Value.
func (r *request) tagList(prefix string) []Tag {
	var out []Tag
	for _, i := range r.indexes(prefix) {
		k := fmt.Sprintf("%s.%d.", prefix, i)
		out = append(out, Tag{Key: r.param(k + "Key"), Value: r.param(k + "Value")})
	}
	return out
}

// tagSpecifications reads the TagSpecification.N of a create action whose
// resource is of type want.
func (r *request) tagSpecifications(want string) ([]Tag, error) {
	var tags []Tag
	for _, i := range r.indexes("TagSpecification") {
		k := fmt.Sprintf("TagSpecification.%d.", i)
		if rt := r.param(k + "ResourceType"); rt != want {
			return nil, awsapi.Errorf("InvalidParameterValue", "'%s' is not a valid taggable resource type for this operation.", rt)
		}
		tags = mergeTags(tags, r.tagList(k+"Tag"))
	}
	for _, t := range tags {
		if err := checkTag(t); err != nil {
			return nil, err
		}
	}
	if len(tags) > maxTags {
		return nil, awsapi.Errorf("TagLimitExceeded", "The maximum number of tags per resource (%d) has been exceeded.", maxTags)
	}
	return tags, nil
}

// mergeTags sets each of more on tags, replacing the value of a key that is
// already there.
func mergeTags(tags, more []Tag) []Tag {
	for _, t := range more {
		if i := slices.IndexFunc(tags, func(x Tag) bool { return x.Key == t.Key }); i >= 0 {
			tags[i].Value = t.Value
		} else {
			tags = append(tags, t)
		}
	}
	return tags
}

// editTags applies fn to the tags of the resource with id, failing as EC2
// does for an id it does not know.
func editTags(tx state.Tx, account, region, id string, fn func([]Tag) ([]Tag, error)) (string, error) {
	key := scopePrefix(account, region) + id
	var kind string
	switch {
	case strings.HasPrefix(id, "vpc-"):
		v, err := LookupVPC(tx, account, region, id)
		if err != nil || v == nil {
			return "", orNotFound(err, "InvalidVpcID.NotFound", "vpc ID", id)
		}
		if v.Tags, err = fn(v.Tags); err != nil {
			return "", err
		}
		kind = ChangeVPC
		err = tx.Put(kindVPC, key, v)
		return kind, err
	case strings.HasPrefix(id, "subnet-"):
		sn, err := LookupSubnet(tx, account, region, id)
		if err != nil || sn == nil {
			return "", orNotFound(err, "InvalidSubnetID.NotFound", "subnet ID", id)
		}
		if sn.Tags, err = fn(sn.Tags); err != nil {
			return "", err
		}
		kind = ChangeSubnet
		err = tx.Put(kindSubnet, key, sn)
		return kind, err
	case strings.HasPrefix(id, "sg-"):
		g, err := LookupSecurityGroup(tx, account, region, id)
		if err != nil || g == nil {
			return "", orNotFound(err, "InvalidGroup.NotFound", "security group", id)
		}
		if g.Tags, err = fn(g.Tags); err != nil {
			return "", err
		}
		kind = ChangeSecurityGroup
		err = tx.Put(kindSecurityGroup, key, g)
		return kind, err
	}
	return "", awsapi.Errorf("InvalidID", "The ID '%s' is not valid", id)
}

func orNotFound(err error, code, what, id string) error {
	if err != nil {
		return err
	}
	return notFound(code, what, []string{id})
}

func (s *Service) createTags(r *request) (response, error) {
	ids := r.list("ResourceId")
	tags := r.tagList("Tag")
	if len(ids) == 0 {
		return nil, awsapi.Errorf("MissingParameter", "The request must contain the parameter resourceIdSet")
	}
	if len(tags) == 0 {
		return nil, awsapi.Errorf("MissingParameter", "The request must contain the parameter tagSet")
	}
	for _, t := range tags {
		if err := checkTag(t); err != nil {
			return nil, err
		}
	}
	return s.updateTags(r, ids, func(have []Tag) ([]Tag, error) {
		have = mergeTags(have, tags)
		if len(have) > maxTags {
			return nil, awsapi.Errorf("TagLimitExceeded", "The maximum number of tags per resource (%d) has been exceeded.", maxTags)
		}
		return have, nil
	})
}

func (s *Service) deleteTags(r *request) (response, error) {
	ids := r.list("ResourceId")
	if len(ids) == 0 {
		return nil, awsapi.Errorf("MissingParameter", "The request must contain the parameter resourceIdSet")
	}
	type del struct {
		key, value string
		anyValue   bool
	}
	var dels []del
	for _, i := range r.indexes("Tag") {
		k := fmt.Sprintf("Tag.%d.", i)
		// A key without a Value deletes the tag whatever its value; with
		// one (even empty), only when the value matches.
		dels = append(dels, del{r.param(k + "Key"), r.param(k + "Value"), !r.has(k + "Value")})
	}
	return s.updateTags(r, ids, func(have []Tag) ([]Tag, error) {
		if len(dels) == 0 {
			return nil, nil
		}
		return slices.DeleteFunc(have, func(t Tag) bool {
			return slices.ContainsFunc(dels, func(d del) bool { return d.key == t.Key && (d.anyValue || d.value == t.Value) })
		}), nil
	})
}

func (s *Service) updateTags(r *request, ids []string, fn func([]Tag) ([]Tag, error)) (response, error) {
	var kinds []string
	err := s.Store.Update(r.ctx, func(tx state.Tx) error {
		kinds = nil
		for _, id := range ids {
			kind, err := editTags(tx, r.account, r.region, id, fn)
			if err != nil {
				return err
			}
			if !slices.Contains(kinds, kind) {
				kinds = append(kinds, kind)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, k := range kinds {
		s.changed(k)
	}
	return &emptyResponse{Return: true}, nil
}

type tagDescriptionXML struct {
	Key          string `xml:"key"`
	ResourceID   string `xml:"resourceId"`
	ResourceType string `xml:"resourceType"`
	Value        string `xml:"value"`
}

type describeTagsResponse struct {
	ResponseHeader
	TagSet    []tagDescriptionXML `xml:"tagSet>item"`
	NextToken string              `xml:"nextToken,omitempty"`
}

func (s *Service) describeTags(r *request) (response, error) {
	fs := r.filters()
	p, err := r.paging("", false)
	if err != nil {
		return nil, err
	}
	var all []tagDescriptionXML
	add := func(id, typ string, tags []Tag) {
		for _, t := range tags {
			all = append(all, tagDescriptionXML{Key: t.Key, ResourceID: id, ResourceType: typ, Value: t.Value})
		}
	}
	err = s.Store.View(r.ctx, func(tx state.Tx) error {
		vpcs, err := VPCs(tx, r.account, r.region)
		if err != nil {
			return err
		}
		for _, v := range vpcs {
			add(v.ID, "vpc", v.Tags)
		}
		subnets, err := Subnets(tx, r.account, r.region, "")
		if err != nil {
			return err
		}
		for _, sn := range subnets {
			add(sn.ID, "subnet", sn.Tags)
		}
		groups, err := SecurityGroups(tx, r.account, r.region)
		if err != nil {
			return err
		}
		for _, g := range groups {
			add(g.ID, "security-group", g.Tags)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Ordered by resource, then key, so the paging token is a position.
	tagKey := func(t tagDescriptionXML) string { return t.ResourceID + "\x00" + t.Key }
	slices.SortFunc(all, func(a, b tagDescriptionXML) int { return strings.Compare(tagKey(a), tagKey(b)) })
	var matched []tagDescriptionXML
	for _, t := range all {
		ok, err := matchAll(fs, func(name string) ([]string, bool) {
			switch name {
			case "key":
				return []string{t.Key}, true
			case "value":
				return []string{t.Value}, true
			case "resource-id":
				return []string{t.ResourceID}, true
			case "resource-type":
				return []string{t.ResourceType}, true
			}
			if k, ok := strings.CutPrefix(name, "tag:"); ok {
				if k == t.Key {
					return []string{t.Value}, true
				}
				return nil, true
			}
			return nil, false
		})
		if err != nil {
			return nil, err
		}
		if ok {
			matched = append(matched, t)
		}
	}
	matched, next := page(matched, tagKey, p)
	return &describeTagsResponse{TagSet: append([]tagDescriptionXML{}, matched...), NextToken: next}, nil
}
