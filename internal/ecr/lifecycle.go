package ecr

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/ecr/ecrtypes"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/registry"
	"github.com/gantry-dev/gantry/internal/state"
)

// lifecyclePolicy is ECR's lifecycle policy document.
type lifecyclePolicy struct {
	Rules []lifecycleRule `json:"rules"`
}

type lifecycleRule struct {
	RulePriority int    `json:"rulePriority"`
	Description  string `json:"description,omitempty"`
	Selection    struct {
		TagStatus      string   `json:"tagStatus"`
		TagPrefixList  []string `json:"tagPrefixList,omitempty"`
		TagPatternList []string `json:"tagPatternList,omitempty"`
		CountType      string   `json:"countType"`
		CountUnit      string   `json:"countUnit,omitempty"`
		CountNumber    int      `json:"countNumber"`
	} `json:"selection"`
	Action struct {
		Type string `json:"type"`
	} `json:"action"`
}

func parsePolicy(text string) (*lifecyclePolicy, error) {
	invalid := func(format string, args ...any) error {
		return awsapi.Errorf("InvalidParameterException", "Invalid parameter at 'LifecyclePolicyText' failed to satisfy constraint: 'Lifecycle policy validation failure: %s'", fmt.Sprintf(format, args...))
	}
	var p lifecyclePolicy
	dec := json.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, invalid("%v", err)
	}
	if len(p.Rules) == 0 {
		return nil, invalid("the policy has no rules")
	}
	seen := map[int]bool{}
	for _, r := range p.Rules {
		sel := r.Selection
		switch {
		case r.RulePriority < 1:
			return nil, invalid("rulePriority must be a positive integer")
		case seen[r.RulePriority]:
			return nil, invalid("rulePriority %d is used by two rules", r.RulePriority)
		case r.Action.Type != "expire":
			return nil, invalid("action.type must be expire")
		case sel.TagStatus != "tagged" && sel.TagStatus != "untagged" && sel.TagStatus != "any":
			return nil, invalid("selection.tagStatus must be tagged, untagged or any")
		case sel.TagStatus == "tagged" && len(sel.TagPrefixList)+len(sel.TagPatternList) == 0:
			return nil, invalid("a rule with tagStatus tagged needs tagPrefixList or tagPatternList")
		case sel.TagStatus != "tagged" && len(sel.TagPrefixList)+len(sel.TagPatternList) > 0:
			return nil, invalid("tagPrefixList and tagPatternList need tagStatus tagged")
		case sel.CountNumber < 1:
			return nil, invalid("selection.countNumber must be at least 1")
		case sel.CountType == "imageCountMoreThan" && sel.CountUnit != "":
			return nil, invalid("countUnit is only for countType sinceImagePushed")
		case sel.CountType == "sinceImagePushed" && sel.CountUnit != "days":
			return nil, invalid("countType sinceImagePushed needs countUnit days")
		case sel.CountType != "imageCountMoreThan" && sel.CountType != "sinceImagePushed":
			return nil, invalid("selection.countType must be imageCountMoreThan or sinceImagePushed")
		}
		seen[r.RulePriority] = true
	}
	sort.Slice(p.Rules, func(i, j int) bool { return p.Rules[i].RulePriority < p.Rules[j].RulePriority })
	return &p, nil
}

// selects says whether the rule's selection matches img. A tag list
// matches when every prefix (or pattern) matches one of the image's tags.
func (r *lifecycleRule) selects(img *registry.Image) bool {
	switch r.Selection.TagStatus {
	case "untagged":
		return len(img.Tags) == 0
	case "any":
		return true
	}
	match := func(ok func(tag string) bool) bool {
		for _, t := range img.Tags {
			if ok(t) {
				return true
			}
		}
		return false
	}
	for _, p := range r.Selection.TagPrefixList {
		if !match(func(t string) bool { return strings.HasPrefix(t, p) }) {
			return false
		}
	}
	for _, p := range r.Selection.TagPatternList {
		if !match(func(t string) bool { ok, _ := path.Match(p, t); return ok }) {
			return false
		}
	}
	return len(img.Tags) > 0
}

// expired applies the rules in priority order: an image belongs to the
// first rule whose selection matches it, and only that rule may expire it.
func (p *lifecyclePolicy) expired(imgs []*registry.Image, now time.Time) []*registry.Image {
	sort.Slice(imgs, func(i, j int) bool { return imgs[i].PushedAt.After(imgs[j].PushedAt) })
	claimed := map[string]bool{}
	var out []*registry.Image
	for i := range p.Rules {
		r := &p.Rules[i]
		n := 0
		for _, img := range imgs {
			if claimed[img.Digest] || !r.selects(img) {
				continue
			}
			claimed[img.Digest] = true
			n++
			switch r.Selection.CountType {
			case "imageCountMoreThan":
				if n > r.Selection.CountNumber {
					out = append(out, img)
				}
			case "sinceImagePushed":
				if now.Sub(img.PushedAt) > time.Duration(r.Selection.CountNumber)*24*time.Hour {
					out = append(out, img)
				}
			}
		}
	}
	return out
}

// ApplyLifecycle expires the images the repository's policy selects. It
// runs when a policy is set, after every push, and periodically.
func (s *Service) ApplyLifecycle(ctx context.Context, name string) error {
	var expired []string
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		expired = nil
		key := s.repoKey(name)
		var repo registry.Repository
		ok, err := tx.Get(registry.KindRepository, key, &repo)
		if err != nil || !ok || repo.LifecyclePolicy == "" {
			return err
		}
		p, err := parsePolicy(repo.LifecyclePolicy)
		if err != nil {
			return err
		}
		imgs, err := images(tx, key)
		if err != nil {
			return err
		}
		for _, img := range p.expired(imgs, time.Now()) {
			if err := registry.DeleteImage(tx, key, img); err != nil {
				return err
			}
			expired = append(expired, img.Digest)
		}
		repo.LifecycleEvaluatedAt = time.Now().UTC()
		return tx.Put(registry.KindRepository, key, &repo)
	})
	if len(expired) > 0 && err == nil {
		if s.Log != nil {
			s.Log.Info("lifecycle policy expired images", "repository", name, "images", expired)
		}
		s.Registry.CollectSoon()
	}
	return err
}

// ApplyAllLifecycles runs every repository's policy (the periodic pass).
func (s *Service) ApplyAllLifecycles(ctx context.Context) {
	var names []string
	scope := registry.Scope(s.account(), s.Registry.Region)
	s.Store.View(ctx, func(tx state.Tx) error {
		names = nil
		return tx.Scan(registry.KindRepository, scope, "", 0, func(k string, data []byte) error {
			var r registry.Repository
			if json.Unmarshal(data, &r) == nil && r.LifecyclePolicy != "" {
				names = append(names, r.Name)
			}
			return nil
		})
	})
	for _, n := range names {
		if err := s.ApplyLifecycle(ctx, n); err != nil && s.Log != nil {
			s.Log.Warn("lifecycle policy", "repository", n, "err", err)
		}
	}
}

func (s *Service) PutLifecyclePolicy(ctx context.Context, in *ecrtypes.PutLifecyclePolicyRequest) (*ecrtypes.PutLifecyclePolicyResponse, error) {
	text := deref(in.LifecyclePolicyText)
	if text == "" || len(text) > 30720 {
		return nil, awsapi.InvalidParameter("Invalid parameter at 'lifecyclePolicyText' failed to satisfy constraint: 'Member must have length between 100 and 30720'")
	}
	if _, err := parsePolicy(text); err != nil {
		return nil, err
	}
	var name string
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		key, r, err := s.getRepo(tx, in.RegistryId, in.RepositoryName)
		if err != nil {
			return err
		}
		name, r.LifecyclePolicy = r.Name, text
		return tx.Put(registry.KindRepository, key, r)
	})
	if err != nil {
		return nil, err
	}
	if err := s.ApplyLifecycle(ctx, name); err != nil {
		return nil, err
	}
	return &ecrtypes.PutLifecyclePolicyResponse{LifecyclePolicyText: ptr(text), RegistryId: ptr(s.account()), RepositoryName: ptr(name)}, nil
}

func (s *Service) GetLifecyclePolicy(ctx context.Context, in *ecrtypes.GetLifecyclePolicyRequest) (*ecrtypes.GetLifecyclePolicyResponse, error) {
	var repo *registry.Repository
	err := s.Store.View(ctx, func(tx state.Tx) (err error) {
		_, repo, err = s.getRepo(tx, in.RegistryId, in.RepositoryName)
		return
	})
	if err != nil {
		return nil, err
	}
	if repo.LifecyclePolicy == "" {
		return nil, noPolicy(repo.Name, s.account())
	}
	out := &ecrtypes.GetLifecyclePolicyResponse{LifecyclePolicyText: ptr(repo.LifecyclePolicy), RegistryId: ptr(s.account()), RepositoryName: ptr(repo.Name)}
	if !repo.LifecycleEvaluatedAt.IsZero() {
		out.LastEvaluatedAt = ecstypes.At(repo.LifecycleEvaluatedAt)
	}
	return out, nil
}

func (s *Service) DeleteLifecyclePolicy(ctx context.Context, in *ecrtypes.DeleteLifecyclePolicyRequest) (*ecrtypes.DeleteLifecyclePolicyResponse, error) {
	out := &ecrtypes.DeleteLifecyclePolicyResponse{RegistryId: ptr(s.account())}
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		key, r, err := s.getRepo(tx, in.RegistryId, in.RepositoryName)
		if err != nil {
			return err
		}
		if r.LifecyclePolicy == "" {
			return noPolicy(r.Name, s.account())
		}
		out.RepositoryName, out.LifecyclePolicyText = ptr(r.Name), ptr(r.LifecyclePolicy)
		r.LifecyclePolicy = ""
		return tx.Put(registry.KindRepository, key, r)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func noPolicy(name, account string) error {
	return awsapi.Errorf("LifecyclePolicyNotFoundException", "Lifecycle policy does not exist for the repository with name '%s' in the registry with id '%s'", name, account)
}
