package ecs

import (
	"context"
	"regexp"
	"strings"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/model"
	"github.com/gantry-dev/gantry/internal/state"
)

// AWS tag limits, as ECS documents them.
const (
	maxTags        = 50
	maxTagKeyLen   = 128
	maxTagValueLen = 256
)

// tagChars are the characters AWS allows in tag keys and values: letters,
// numbers and spaces in any script, and _ . : / = + - @.
var tagChars = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$`)

func (s *Service) tagOps() map[string]awsapi.Handler {
	return map[string]awsapi.Handler{
		"TagResource":         awsapi.Op(s.tagResource),
		"UntagResource":       awsapi.Op(s.untagResource),
		"ListTagsForResource": awsapi.Op(s.listTagsForResource),
	}
}

// validateTags checks tags as a create or TagResource call receives them.
func validateTags(tags []*ecstypes.Tag) error {
	if len(tags) > maxTags {
		return awsapi.InvalidParameter("Too many tags: a resource can have at most %d tags.", maxTags)
	}
	seen := map[string]bool{}
	for _, t := range tags {
		if t == nil || t.Key == nil {
			return awsapi.InvalidParameter("Tag keys must be between 1 and %d characters.", maxTagKeyLen)
		}
		key, value := *t.Key, ecstypes.Deref(t.Value)
		if n := len([]rune(key)); n < 1 || n > maxTagKeyLen {
			return awsapi.InvalidParameter("Tag keys must be between 1 and %d characters.", maxTagKeyLen)
		}
		if len([]rune(value)) > maxTagValueLen {
			return awsapi.InvalidParameter("Tag values must be at most %d characters.", maxTagValueLen)
		}
		if !tagChars.MatchString(key) || !tagChars.MatchString(value) {
			return awsapi.InvalidParameter("Tags can only contain letters, numbers, spaces and the characters _ . : / = + - @.")
		}
		if reservedTagKey(key) {
			return awsapi.InvalidParameter("The 'aws:' prefix is reserved for AWS use and cannot be used in tag keys.")
		}
		if seen[key] {
			return awsapi.InvalidParameter("Duplicate tag key '%s': each tag key must be unique.", key)
		}
		seen[key] = true
	}
	return nil
}

func reservedTagKey(key string) bool {
	return strings.HasPrefix(strings.ToLower(key), "aws:")
}

// ResourceTags returns the tags stored for a resource ARN (nil when it has
// none), in the order they were first set.
func ResourceTags(tx state.Tx, arn string) ([]*ecstypes.Tag, error) {
	var stored []ecstypes.Tag
	if _, err := tx.Get(model.KindTags, arn, &stored); err != nil {
		return nil, err
	}
	out := make([]*ecstypes.Tag, 0, len(stored))
	for i := range stored {
		t := stored[i]
		if t.Value == nil {
			t.Value = ecstypes.String("")
		}
		out = append(out, &t)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// AddResourceTags merges tags into a resource's tags (a key already present
// takes the new value) after validating them; callers that create a resource
// with tags call it in the same transaction.
func AddResourceTags(tx state.Tx, arn string, tags []*ecstypes.Tag) error {
	if err := validateTags(tags); err != nil {
		return err
	}
	if len(tags) == 0 {
		return nil
	}
	existing, err := ResourceTags(tx, arn)
	if err != nil {
		return err
	}
	for _, t := range tags {
		v := ecstypes.String(ecstypes.Deref(t.Value))
		replaced := false
		for _, e := range existing {
			if *e.Key == *t.Key {
				e.Value, replaced = v, true
			}
		}
		if !replaced {
			existing = append(existing, &ecstypes.Tag{Key: ecstypes.String(*t.Key), Value: v})
		}
	}
	if len(existing) > maxTags {
		return awsapi.InvalidParameter("Too many tags: a resource can have at most %d tags.", maxTags)
	}
	return putStoredTags(tx, arn, existing)
}

// RemoveResourceTags deletes the given keys from a resource's tags; keys it
// does not have are ignored, as AWS ignores them.
func RemoveResourceTags(tx state.Tx, arn string, keys []string) error {
	existing, err := ResourceTags(tx, arn)
	if err != nil {
		return err
	}
	var kept []*ecstypes.Tag
	for _, t := range existing {
		remove := false
		for _, k := range keys {
			remove = remove || k == *t.Key
		}
		if !remove {
			kept = append(kept, t)
		}
	}
	return putStoredTags(tx, arn, kept)
}

// DeleteResourceTags forgets a deleted resource's tags, so a new resource
// with the same ARN starts untagged.
func DeleteResourceTags(tx state.Tx, arn string) error {
	_, err := tx.Delete(model.KindTags, arn)
	return err
}

func putStoredTags(tx state.Tx, arn string, tags []*ecstypes.Tag) error {
	if len(tags) == 0 {
		return DeleteResourceTags(tx, arn)
	}
	stored := make([]ecstypes.Tag, len(tags))
	for i, t := range tags {
		stored[i] = *t
	}
	return tx.Put(model.KindTags, arn, stored)
}

// checkTaggable verifies that arn names an existing resource of the caller
// that ECS can tag, answering as ECS does when it does not.
func checkTaggable(tx state.Tx, sc model.Scope, arn string) error {
	if arn == "" {
		return awsapi.InvalidParameter("resourceArn must not be empty.")
	}
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) != 6 || parts[0] != "arn" || parts[2] != "ecs" || !strings.Contains(parts[5], "/") {
		return awsapi.InvalidParameter("The ARN provided is invalid.")
	}
	kind, rest, _ := strings.Cut(parts[5], "/")
	// A well-formed ARN of another account or region names nothing here.
	foreign := parts[3] != sc.Region || parts[4] != sc.Account
	switch kind {
	case "cluster":
		var rec model.ClusterRecord
		ok, err := tx.Get(model.KindCluster, sc.ClusterKey(rest), &rec)
		if err != nil {
			return err
		}
		if foreign || !ok || ecstypes.Deref(rec.Cluster.Status) == "INACTIVE" {
			return clusterNotFound()
		}
		return nil
	case "task-definition":
		family, rev, ok := model.ParseTaskDefinitionRef(rest)
		if !ok || rev == 0 {
			return awsapi.InvalidParameter("The ARN provided is invalid.")
		}
		found := false
		if !foreign {
			var td ecstypes.TaskDefinition
			var err error
			if found, err = tx.Get(model.KindTaskDefinition, sc.TaskDefinitionKey(family, rev), &td); err != nil {
				return err
			}
		}
		if !found {
			return awsapi.ClientException("Unable to describe task definition.")
		}
		return nil
	case "task":
		cluster, id, ok := strings.Cut(rest, "/")
		if !ok {
			return awsapi.InvalidParameter("The ARN provided is invalid.")
		}
		found := false
		if !foreign {
			var rec model.TaskRecord
			var err error
			if found, err = tx.Get(model.KindTask, sc.TaskKey(cluster, id), &rec); err != nil {
				return err
			}
		}
		if !found {
			return awsapi.InvalidParameter("The specified task is not found.")
		}
		return nil
	case "service":
		cluster, name, ok := strings.Cut(rest, "/")
		if !ok {
			return awsapi.InvalidParameter("The ARN provided is invalid.")
		}
		var rec model.ServiceRecord
		found := false
		if !foreign {
			var err error
			if found, err = tx.Get(model.KindService, sc.ServiceKey(cluster, name), &rec); err != nil {
				return err
			}
		}
		if !found || ecstypes.Deref(rec.Service.Status) == "INACTIVE" {
			return awsapi.Errorf("ServiceNotFoundException", "Service not found.")
		}
		return nil
	}
	return awsapi.InvalidParameter("The specified resource is not found.")
}

func (s *Service) tagResource(ctx context.Context, in *ecstypes.TagResourceRequest) (*ecstypes.TagResourceResponse, error) {
	sc := scopeOf(ctx)
	arn := ecstypes.Deref(in.ResourceArn)
	if len(in.Tags) == 0 {
		return nil, awsapi.InvalidParameter("Tags must not be empty.")
	}
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		if err := checkTaggable(tx, sc, arn); err != nil {
			return err
		}
		return AddResourceTags(tx, arn, in.Tags)
	})
	if err != nil {
		return nil, err
	}
	return &ecstypes.TagResourceResponse{}, nil
}

func (s *Service) untagResource(ctx context.Context, in *ecstypes.UntagResourceRequest) (*ecstypes.UntagResourceResponse, error) {
	sc := scopeOf(ctx)
	arn := ecstypes.Deref(in.ResourceArn)
	if len(in.TagKeys) == 0 {
		return nil, awsapi.InvalidParameter("TagKeys must not be empty.")
	}
	for _, k := range in.TagKeys {
		if n := len([]rune(k)); n < 1 || n > maxTagKeyLen {
			return nil, awsapi.InvalidParameter("Tag keys must be between 1 and %d characters.", maxTagKeyLen)
		}
		if reservedTagKey(k) {
			return nil, awsapi.InvalidParameter("The 'aws:' prefix is reserved for AWS use and cannot be used in tag keys.")
		}
	}
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		if err := checkTaggable(tx, sc, arn); err != nil {
			return err
		}
		return RemoveResourceTags(tx, arn, in.TagKeys)
	})
	if err != nil {
		return nil, err
	}
	return &ecstypes.UntagResourceResponse{}, nil
}

func (s *Service) listTagsForResource(ctx context.Context, in *ecstypes.ListTagsForResourceRequest) (*ecstypes.ListTagsForResourceResponse, error) {
	sc := scopeOf(ctx)
	arn := ecstypes.Deref(in.ResourceArn)
	out := &ecstypes.ListTagsForResourceResponse{}
	err := s.Store.View(ctx, func(tx state.Tx) error {
		if err := checkTaggable(tx, sc, arn); err != nil {
			return err
		}
		tags, err := ResourceTags(tx, arn)
		out.Tags = tags
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
