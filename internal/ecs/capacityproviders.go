package ecs

import (
	"context"
	"slices"
	"strconv"
	"strings"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/model"
	"github.com/gantry-dev/gantry/internal/state"
)

// fargateProviders are the AWS-managed capacity providers every account has;
// Gantry has no Auto Scaling groups, so they are the only ones.
var fargateProviders = []string{"FARGATE", "FARGATE_SPOT"}

// Strategy limits, as ECS documents them.
const (
	maxStrategyWeight = 1000
	maxStrategyBase   = 100000
)

func (s *Service) capacityProviderOps() map[string]awsapi.Handler {
	return map[string]awsapi.Handler{
		"DescribeCapacityProviders":   awsapi.Op(s.describeCapacityProviders),
		"PutClusterCapacityProviders": awsapi.Op(s.putClusterCapacityProviders),
	}
}

// providerName accepts a capacity provider's name or ARN.
func providerName(ref string) string {
	if strings.HasPrefix(ref, "arn:") {
		if i := strings.LastIndex(ref, ":capacity-provider/"); i >= 0 {
			return ref[i+len(":capacity-provider/"):]
		}
	}
	return ref
}

// validateCapacityProviders checks a cluster's providers and its default
// strategy against each other, as CreateCluster and
// PutClusterCapacityProviders do.
func validateCapacityProviders(providers []string, strategy []*ecstypes.CapacityProviderStrategyItem) error {
	seen := map[string]bool{}
	for _, p := range providers {
		if !slices.Contains(fargateProviders, p) {
			return awsapi.InvalidParameter("The specified capacity provider '%s' does not exist. Specify a valid name or ARN and try again.", p)
		}
		if seen[p] {
			return awsapi.InvalidParameter("The specified capacity providers contain duplicates: %s.", p)
		}
		seen[p] = true
	}
	return ValidateCapacityProviderStrategy(strategy, providers)
}

// ValidateCapacityProviderStrategy checks a capacity provider strategy (a
// cluster's default or one given to RunTask) against the providers
// associated with the cluster.
func ValidateCapacityProviderStrategy(strategy []*ecstypes.CapacityProviderStrategyItem, clusterProviders []string) error {
	if len(strategy) > 20 {
		return awsapi.InvalidParameter("A capacity provider strategy can contain at most 20 capacity providers.")
	}
	seen := map[string]bool{}
	withBase, weighted := 0, 0
	for _, item := range strategy {
		if item == nil || ecstypes.Deref(item.CapacityProvider) == "" {
			return awsapi.InvalidParameter("capacityProvider must be specified in each capacity provider strategy item.")
		}
		name := providerName(*item.CapacityProvider)
		if !slices.Contains(fargateProviders, name) {
			return awsapi.InvalidParameter("The specified capacity provider '%s' does not exist. Specify a valid name or ARN and try again.", name)
		}
		if !slices.Contains(clusterProviders, name) {
			return awsapi.InvalidParameter("The specified capacity provider strategy cannot contain a capacity provider that is not associated with the cluster. Associate the capacity provider with the cluster or specify a valid capacity provider and try again.")
		}
		if seen[name] {
			return awsapi.InvalidParameter("The specified capacity provider strategy contains duplicate capacity provider '%s'.", name)
		}
		seen[name] = true
		if w := ecstypes.Deref(item.Weight); w < 0 || w > maxStrategyWeight {
			return awsapi.InvalidParameter("The capacity provider strategy weight must be between 0 and %d.", maxStrategyWeight)
		} else if w > 0 {
			weighted++
		}
		if b := ecstypes.Deref(item.Base); b < 0 || b > maxStrategyBase {
			return awsapi.InvalidParameter("The capacity provider strategy base must be between 0 and %d.", maxStrategyBase)
		} else if b > 0 {
			withBase++
		}
	}
	if withBase > 1 {
		return awsapi.InvalidParameter("Only one capacity provider in a capacity provider strategy can have a base defined.")
	}
	if len(strategy) > 0 && weighted == 0 {
		return awsapi.InvalidParameter("At least one capacity provider in a capacity provider strategy must have a weight greater than zero.")
	}
	return nil
}

// normalizeStrategy stores a strategy as ECS returns it: provider by name,
// weight and base always present.
func normalizeStrategy(strategy []*ecstypes.CapacityProviderStrategyItem) []*ecstypes.CapacityProviderStrategyItem {
	out := make([]*ecstypes.CapacityProviderStrategyItem, 0, len(strategy))
	for _, it := range strategy {
		out = append(out, &ecstypes.CapacityProviderStrategyItem{
			CapacityProvider: ecstypes.String(providerName(*it.CapacityProvider)),
			Weight:           ecstypes.Int32(ecstypes.Deref(it.Weight)),
			Base:             ecstypes.Int32(ecstypes.Deref(it.Base)),
		})
	}
	return out
}

func (s *Service) putClusterCapacityProviders(ctx context.Context, in *ecstypes.PutClusterCapacityProvidersRequest) (*ecstypes.PutClusterCapacityProvidersResponse, error) {
	if in.Cluster == nil || *in.Cluster == "" {
		return nil, awsapi.InvalidParameter("cluster must be specified.")
	}
	if in.CapacityProviders == nil {
		return nil, awsapi.InvalidParameter("capacityProviders must be specified.")
	}
	if in.DefaultCapacityProviderStrategy == nil {
		return nil, awsapi.InvalidParameter("defaultCapacityProviderStrategy must be specified.")
	}
	providers := make([]string, len(in.CapacityProviders))
	for i, p := range in.CapacityProviders {
		providers[i] = providerName(p)
	}
	if err := validateCapacityProviders(providers, in.DefaultCapacityProviderStrategy); err != nil {
		return nil, err
	}
	c, err := s.modifyCluster(ctx, in.Cluster, func(c *ecstypes.Cluster) error {
		c.CapacityProviders = providers
		c.DefaultCapacityProviderStrategy = normalizeStrategy(in.DefaultCapacityProviderStrategy)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &ecstypes.PutClusterCapacityProvidersResponse{Cluster: c}, nil
}

func fargateProvider(sc model.Scope, name string) *ecstypes.CapacityProvider {
	return &ecstypes.CapacityProvider{
		CapacityProviderArn: ecstypes.String(sc.ARN("capacity-provider/" + name)),
		Name:                ecstypes.String(name),
		Status:              ecstypes.String("ACTIVE"),
		Type_:               ecstypes.String(name),
	}
}

func (s *Service) describeCapacityProviders(ctx context.Context, in *ecstypes.DescribeCapacityProvidersRequest) (*ecstypes.DescribeCapacityProvidersResponse, error) {
	sc := scopeOf(ctx)
	for _, f := range in.Include {
		if !slices.Contains(ecstypes.Enums["CapacityProviderField"], f) {
			return nil, awsapi.InvalidParameter("include must be TAGS.")
		}
	}
	if in.Cluster != nil {
		if err := s.Store.View(ctx, func(tx state.Tx) error {
			_, err := LookupCluster(tx, sc, in.Cluster)
			return err
		}); err != nil {
			return nil, err
		}
	}
	out := &ecstypes.DescribeCapacityProvidersResponse{CapacityProviders: []*ecstypes.CapacityProvider{}, Failures: []*ecstypes.Failure{}}
	if len(in.CapacityProviders) > 0 {
		for _, ref := range in.CapacityProviders {
			name := providerName(ref)
			if slices.Contains(fargateProviders, name) && (ref == name || ref == sc.ARN("capacity-provider/"+name)) {
				out.CapacityProviders = append(out.CapacityProviders, fargateProvider(sc, name))
				continue
			}
			arn := ref
			if !strings.HasPrefix(ref, "arn:") {
				arn = sc.ARN("capacity-provider/" + ref)
			}
			out.Failures = append(out.Failures, &ecstypes.Failure{Arn: ecstypes.String(arn), Reason: ecstypes.String("MISSING")})
		}
		return out, nil
	}
	// Without names, every provider is listed, a page at a time.
	limit := 10
	if in.MaxResults != nil {
		if *in.MaxResults < 1 || *in.MaxResults > 10 {
			return nil, awsapi.InvalidParameter("maxResults must be between 1 and 10.")
		}
		limit = int(*in.MaxResults)
	}
	start := 0
	if in.NextToken != nil && *in.NextToken != "" {
		after, ok := model.DecodeToken(in.NextToken)
		n, err := strconv.Atoi(after)
		if !ok || err != nil || n < 0 || n > len(fargateProviders) {
			return nil, awsapi.InvalidParameter("Invalid token %s", *in.NextToken)
		}
		start = n
	}
	end := min(start+limit, len(fargateProviders))
	for _, name := range fargateProviders[start:end] {
		out.CapacityProviders = append(out.CapacityProviders, fargateProvider(sc, name))
	}
	if end < len(fargateProviders) {
		out.NextToken = ecstypes.String(model.EncodeToken(strconv.Itoa(end)))
	}
	return out, nil
}
