package autoscaling

import (
	"context"

	"github.com/gantry-dev/gantry/internal/autoscaling/aastypes"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/state"
)

// query is what the Describe operations narrow a namespace's records by;
// an empty field matches everything.
type query struct {
	namespace, dimension *string
	resources, names     []string // any of
	max                  *int32
	token                *string
}

// describe answers a Describe operation: the namespace's records of kind
// that match q, in q.order if given, one page of them. item gives a
// record's answer and the dimension, resource and name q matches against.
func describe[R, T any](ctx context.Context, s *Service, kind string, q query, item func(*R) (*T, string, string, string), order ...func([]*T)) ([]*T, *string, error) {
	if err := checkNamespace(q.namespace); err != nil {
		return nil, nil, err
	}
	dim := ecstypes.Deref(q.dimension)
	if dim != "" && !contains(aastypes.Enums["ScalableDimension"], dim) {
		return nil, nil, validation("1 validation error detected: Value '%s' at 'scalableDimension' failed to satisfy constraint: Member must satisfy enum value set: %v", dim, aastypes.Enums["ScalableDimension"])
	}
	var recs []R
	err := s.Store.View(ctx, func(tx state.Tx) (err error) {
		recs, err = state.List[R](tx, kind, scopeOf(ctx).Prefix()+*q.namespace+"/")
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	all := []*T{}
	for i := range recs {
		t, d, res, name := item(&recs[i])
		if (dim != "" && d != dim) || (len(q.resources) > 0 && !contains(q.resources, res)) || (len(q.names) > 0 && !contains(q.names, name)) {
			continue
		}
		all = append(all, t)
	}
	for _, o := range order {
		o(all)
	}
	lo, hi, next, err := page(len(all), q.max, q.token)
	if err != nil {
		return nil, nil, err
	}
	return all[lo:hi:hi], next, nil
}

// one is an optional single filter value as a list.
func one(s *string) []string {
	if ecstypes.Deref(s) == "" {
		return nil
	}
	return []string{*s}
}
