package ecs

import (
	"context"
	"encoding/json"
	"regexp"
	"slices"
	"strconv"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/model"
	"github.com/gantry-dev/gantry/internal/state"
)

var clusterNameRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,255}$`)

func (s *Service) clusterOps() map[string]awsapi.Handler {
	return map[string]awsapi.Handler{
		"CreateCluster":         awsapi.Op(s.createCluster),
		"DescribeClusters":      awsapi.Op(s.describeClusters),
		"ListClusters":          awsapi.Op(s.listClusters),
		"UpdateCluster":         awsapi.Op(s.updateCluster),
		"UpdateClusterSettings": awsapi.Op(s.updateClusterSettings),
		"DeleteCluster":         awsapi.Op(s.deleteCluster),
	}
}

func clusterNotFound() error {
	return awsapi.Errorf("ClusterNotFoundException", "Cluster not found.")
}

// LookupCluster finds an ACTIVE cluster by name or ARN (nil or empty means
// "default"), or fails with ClusterNotFoundException as every ECS operation
// that names a cluster does. An ARN of another account or region names
// nothing here.
func LookupCluster(tx state.Tx, sc model.Scope, ref *string) (*model.ClusterRecord, error) {
	name := model.ClusterName(ref)
	if ref != nil && *ref != "" && *ref != name && *ref != sc.ClusterARN(name) {
		return nil, clusterNotFound()
	}
	var rec model.ClusterRecord
	ok, err := tx.Get(model.KindCluster, sc.ClusterKey(name), &rec)
	if err != nil {
		return nil, err
	}
	if !ok || ecstypes.Deref(rec.Cluster.Status) != "ACTIVE" {
		return nil, clusterNotFound()
	}
	return &rec, nil
}

// taskCounts counts a cluster's tasks by lastStatus: RUNNING is running;
// PROVISIONING, PENDING and ACTIVATING are pending; active is anything not
// yet STOPPED.
func taskCounts(tx state.Tx, sc model.Scope, cluster string) (running, pending, active int32, err error) {
	err = tx.Scan(model.KindTask, sc.Prefix()+cluster+"/", "", 0, func(_ string, data []byte) error {
		var rec model.TaskRecord
		if err := json.Unmarshal(data, &rec); err != nil {
			return err
		}
		switch ecstypes.Deref(rec.Task.LastStatus) {
		case "RUNNING":
			running++
		case "PROVISIONING", "PENDING", "ACTIVATING":
			pending++
		}
		if ecstypes.Deref(rec.Task.LastStatus) != "STOPPED" {
			active++
		}
		return nil
	})
	return
}

// clusterView is a stored cluster as the API shows it: counts from the
// tasks, and the optional parts only when include asks for them (nil
// include shows everything, as the create and update calls answer).
func clusterView(tx state.Tx, sc model.Scope, rec *model.ClusterRecord, include []string) (*ecstypes.Cluster, error) {
	c := rec.Cluster
	wants := func(field string) bool { return include == nil || slices.Contains(include, field) }
	running, pending := int32(0), int32(0)
	if ecstypes.Deref(c.Status) == "ACTIVE" {
		var err error
		if running, pending, _, err = taskCounts(tx, sc, *c.ClusterName); err != nil {
			return nil, err
		}
	}
	c.RunningTasksCount = ecstypes.Int32(running)
	c.PendingTasksCount = ecstypes.Int32(pending)
	services := int32(0)
	if ecstypes.Deref(c.Status) == "ACTIVE" {
		var err error
		if services, err = ActiveServicesCount(tx, sc, *c.ClusterName); err != nil {
			return nil, err
		}
	}
	c.ActiveServicesCount = ecstypes.Int32(services)
	c.RegisteredContainerInstancesCount = ecstypes.Int32(0)
	if !wants("SETTINGS") {
		c.Settings = nil
	}
	if !wants("CONFIGURATIONS") {
		c.Configuration = nil
	}
	if !wants("ATTACHMENTS") {
		c.Attachments, c.AttachmentsStatus = nil, nil
	}
	c.Statistics = nil
	if wants("STATISTICS") {
		stat := func(name string, v int32) *ecstypes.KeyValuePair {
			return &ecstypes.KeyValuePair{Name: ecstypes.String(name), Value: ecstypes.String(strconv.Itoa(int(v)))}
		}
		// Every Gantry task is a Fargate task.
		c.Statistics = []*ecstypes.KeyValuePair{
			stat("runningEC2TasksCount", 0),
			stat("runningFargateTasksCount", running),
			stat("pendingEC2TasksCount", 0),
			stat("pendingFargateTasksCount", pending),
			stat("activeEC2ServiceCount", 0),
			stat("activeFargateServiceCount", services),
			stat("drainingEC2ServiceCount", 0),
			stat("drainingFargateServiceCount", 0),
		}
	}
	c.Tags = nil
	if wants("TAGS") {
		tags, err := ResourceTags(tx, *c.ClusterArn)
		if err != nil {
			return nil, err
		}
		c.Tags = tags
	}
	return &c, nil
}

func validateClusterSettings(settings []*ecstypes.ClusterSetting) error {
	for _, st := range settings {
		if st != nil && ecstypes.Deref(st.Name) == settingIsolation {
			if err := validIsolationSetting(ecstypes.Deref(st.Value)); err != nil {
				return err
			}
			continue
		}
		if st == nil || ecstypes.Deref(st.Name) != "containerInsights" {
			return awsapi.InvalidParameter("Cluster setting name must be containerInsights or isolation.")
		}
		switch ecstypes.Deref(st.Value) {
		case "enabled", "disabled", "enhanced":
		default:
			return awsapi.InvalidParameter("The value for the containerInsights setting must be one of: enabled, disabled, enhanced.")
		}
	}
	return nil
}

func validateClusterConfiguration(cfg *ecstypes.ClusterConfiguration) error {
	if cfg == nil || cfg.ExecuteCommandConfiguration == nil {
		return nil
	}
	ec := cfg.ExecuteCommandConfiguration
	if ec.Logging != nil && !slices.Contains(ecstypes.Enums["ExecuteCommandLogging"], *ec.Logging) {
		return awsapi.InvalidParameter("executeCommandConfiguration.logging must be one of: NONE, DEFAULT, OVERRIDE.")
	}
	if ec.LogConfiguration != nil && ecstypes.Deref(ec.Logging) != "OVERRIDE" {
		return awsapi.InvalidParameter("executeCommandConfiguration.logConfiguration can only be specified when logging is OVERRIDE.")
	}
	return nil
}

// mergeSettings applies updates to a cluster's settings by name.
func mergeSettings(current, updates []*ecstypes.ClusterSetting) []*ecstypes.ClusterSetting {
	out := slices.Clone(current)
	for _, u := range updates {
		i := slices.IndexFunc(out, func(c *ecstypes.ClusterSetting) bool { return *c.Name == *u.Name })
		if i >= 0 {
			out[i] = u
		} else {
			out = append(out, u)
		}
	}
	return out
}

func (s *Service) createCluster(ctx context.Context, in *ecstypes.CreateClusterRequest) (*ecstypes.CreateClusterResponse, error) {
	sc := scopeOf(ctx)
	name := "default"
	if in.ClusterName != nil {
		name = *in.ClusterName
	}
	if !clusterNameRE.MatchString(name) {
		return nil, awsapi.InvalidParameter("Invalid cluster name. Cluster name can have up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores.")
	}
	if err := validateTags(in.Tags); err != nil {
		return nil, err
	}
	if err := validateClusterSettings(in.Settings); err != nil {
		return nil, err
	}
	if err := s.checkIsolationAvailable(ctx, in.Settings); err != nil {
		return nil, err
	}
	// Only a new cluster takes the default: creating one that exists
	// answers it as it is.
	defaultErr := s.checkDefaultIsolation(ctx, in.Settings)
	if err := validateClusterConfiguration(in.Configuration); err != nil {
		return nil, err
	}
	if err := validateCapacityProviders(in.CapacityProviders, in.DefaultCapacityProviderStrategy); err != nil {
		return nil, err
	}
	var out *ecstypes.Cluster
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		var rec model.ClusterRecord
		ok, err := tx.Get(model.KindCluster, sc.ClusterKey(name), &rec)
		if err != nil {
			return err
		}
		// Creating a cluster that exists answers the existing one, as ECS does.
		if !ok || ecstypes.Deref(rec.Cluster.Status) != "ACTIVE" {
			if defaultErr != nil {
				return defaultErr
			}
			insights, err := EffectiveAccountSetting(tx, sc, "", "containerInsights")
			if err != nil {
				return err
			}
			settings := mergeSettings([]*ecstypes.ClusterSetting{{Name: ecstypes.String("containerInsights"), Value: ecstypes.String(insights)}, s.newClusterIsolation()}, in.Settings)
			rec = model.ClusterRecord{Cluster: ecstypes.Cluster{
				ClusterArn:                      ecstypes.String(sc.ClusterARN(name)),
				ClusterName:                     ecstypes.String(name),
				Status:                          ecstypes.String("ACTIVE"),
				Settings:                        settings,
				Configuration:                   in.Configuration,
				CapacityProviders:               in.CapacityProviders,
				DefaultCapacityProviderStrategy: normalizeStrategy(in.DefaultCapacityProviderStrategy),
			}}
			if in.ServiceConnectDefaults != nil && in.ServiceConnectDefaults.Namespace != nil {
				rec.Cluster.ServiceConnectDefaults = &ecstypes.ClusterServiceConnectDefaults{Namespace: in.ServiceConnectDefaults.Namespace}
			}
			if err := tx.Put(model.KindCluster, sc.ClusterKey(name), rec); err != nil {
				return err
			}
			if err := DeleteResourceTags(tx, sc.ClusterARN(name)); err != nil {
				return err
			}
			if err := AddResourceTags(tx, sc.ClusterARN(name), in.Tags); err != nil {
				return err
			}
		}
		out, err = clusterView(tx, sc, &rec, nil)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &ecstypes.CreateClusterResponse{Cluster: out}, nil
}

func (s *Service) describeClusters(ctx context.Context, in *ecstypes.DescribeClustersRequest) (*ecstypes.DescribeClustersResponse, error) {
	sc := scopeOf(ctx)
	for _, f := range in.Include {
		if !slices.Contains(ecstypes.Enums["ClusterField"], f) {
			return nil, awsapi.InvalidParameter("include must be one of: ATTACHMENTS, CONFIGURATIONS, SETTINGS, STATISTICS, TAGS.")
		}
	}
	if len(in.Clusters) > 100 {
		return nil, awsapi.InvalidParameter("clusters can have at most 100 items.")
	}
	refs := in.Clusters
	if len(refs) == 0 {
		refs = []string{"default"}
	}
	include := in.Include
	if include == nil {
		include = []string{}
	}
	out := &ecstypes.DescribeClustersResponse{Clusters: []*ecstypes.Cluster{}, Failures: []*ecstypes.Failure{}}
	err := s.Store.View(ctx, func(tx state.Tx) error {
		for _, ref := range refs {
			name := model.ClusterName(&ref)
			var rec model.ClusterRecord
			ok := false
			if ref == name || ref == sc.ClusterARN(name) {
				var err error
				if ok, err = tx.Get(model.KindCluster, sc.ClusterKey(name), &rec); err != nil {
					return err
				}
			}
			if !ok {
				arn := ref
				if ref == name {
					arn = sc.ClusterARN(name)
				}
				out.Failures = append(out.Failures, &ecstypes.Failure{Arn: ecstypes.String(arn), Reason: ecstypes.String("MISSING")})
				continue
			}
			c, err := clusterView(tx, sc, &rec, include)
			if err != nil {
				return err
			}
			out.Clusters = append(out.Clusters, c)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *Service) listClusters(ctx context.Context, in *ecstypes.ListClustersRequest) (*ecstypes.ListClustersResponse, error) {
	sc := scopeOf(ctx)
	limit := 100
	if in.MaxResults != nil {
		if *in.MaxResults < 1 || *in.MaxResults > 100 {
			return nil, awsapi.InvalidParameter("maxResults must be between 1 and 100.")
		}
		limit = int(*in.MaxResults)
	}
	after, ok := model.DecodeToken(in.NextToken)
	if !ok {
		return nil, awsapi.InvalidParameter("Invalid token %s", ecstypes.Deref(in.NextToken))
	}
	out := &ecstypes.ListClustersResponse{ClusterArns: []string{}}
	err := s.Store.View(ctx, func(tx state.Tx) error {
		return tx.Scan(model.KindCluster, sc.Prefix(), after, 0, func(key string, data []byte) error {
			var rec model.ClusterRecord
			if err := json.Unmarshal(data, &rec); err != nil {
				return err
			}
			if ecstypes.Deref(rec.Cluster.Status) != "ACTIVE" {
				return nil
			}
			if len(out.ClusterArns) == limit {
				out.NextToken = ecstypes.String(model.EncodeToken(after))
				return state.ErrStop
			}
			out.ClusterArns = append(out.ClusterArns, *rec.Cluster.ClusterArn)
			after = key
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// modifyCluster applies fn to an ACTIVE cluster and returns it as the
// update calls answer.
func (s *Service) modifyCluster(ctx context.Context, ref *string, fn func(*ecstypes.Cluster) error) (*ecstypes.Cluster, error) {
	sc := scopeOf(ctx)
	var out *ecstypes.Cluster
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		rec, err := LookupCluster(tx, sc, ref)
		if err != nil {
			return err
		}
		if err := fn(&rec.Cluster); err != nil {
			return err
		}
		if err := tx.Put(model.KindCluster, sc.ClusterKey(*rec.Cluster.ClusterName), rec); err != nil {
			return err
		}
		out, err = clusterView(tx, sc, rec, nil)
		return err
	})
	return out, err
}

func (s *Service) updateCluster(ctx context.Context, in *ecstypes.UpdateClusterRequest) (*ecstypes.UpdateClusterResponse, error) {
	if in.Cluster == nil || *in.Cluster == "" {
		return nil, awsapi.InvalidParameter("cluster must be specified.")
	}
	if err := validateClusterSettings(in.Settings); err != nil {
		return nil, err
	}
	if err := s.checkIsolationAvailable(ctx, in.Settings); err != nil {
		return nil, err
	}
	if err := validateClusterConfiguration(in.Configuration); err != nil {
		return nil, err
	}
	c, err := s.modifyCluster(ctx, in.Cluster, func(c *ecstypes.Cluster) error {
		c.Settings = mergeSettings(c.Settings, in.Settings)
		if in.Configuration != nil {
			c.Configuration = in.Configuration
		}
		if in.ServiceConnectDefaults != nil {
			c.ServiceConnectDefaults = nil
			if ns := ecstypes.Deref(in.ServiceConnectDefaults.Namespace); ns != "" {
				c.ServiceConnectDefaults = &ecstypes.ClusterServiceConnectDefaults{Namespace: &ns}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &ecstypes.UpdateClusterResponse{Cluster: c}, nil
}

func (s *Service) updateClusterSettings(ctx context.Context, in *ecstypes.UpdateClusterSettingsRequest) (*ecstypes.UpdateClusterSettingsResponse, error) {
	if in.Cluster == nil || *in.Cluster == "" {
		return nil, awsapi.InvalidParameter("cluster must be specified.")
	}
	if len(in.Settings) == 0 {
		return nil, awsapi.InvalidParameter("settings must not be empty.")
	}
	if err := validateClusterSettings(in.Settings); err != nil {
		return nil, err
	}
	if err := s.checkIsolationAvailable(ctx, in.Settings); err != nil {
		return nil, err
	}
	c, err := s.modifyCluster(ctx, in.Cluster, func(c *ecstypes.Cluster) error {
		c.Settings = mergeSettings(c.Settings, in.Settings)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &ecstypes.UpdateClusterSettingsResponse{Cluster: c}, nil
}

func (s *Service) deleteCluster(ctx context.Context, in *ecstypes.DeleteClusterRequest) (*ecstypes.DeleteClusterResponse, error) {
	if in.Cluster == nil || *in.Cluster == "" {
		return nil, awsapi.InvalidParameter("cluster must be specified.")
	}
	sc := scopeOf(ctx)
	var out *ecstypes.Cluster
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		rec, err := LookupCluster(tx, sc, in.Cluster)
		if err != nil {
			return err
		}
		name := *rec.Cluster.ClusterName
		_, _, active, err := taskCounts(tx, sc, name)
		if err != nil {
			return err
		}
		services, err := ActiveServicesCount(tx, sc, name)
		if err != nil {
			return err
		}
		if services > 0 {
			return awsapi.Errorf("ClusterContainsServicesException", "The Cluster cannot be deleted while Services are active.")
		}
		if active > 0 {
			return awsapi.Errorf("ClusterContainsTasksException", "The Cluster cannot be deleted while Tasks are active.")
		}
		// The cluster stays, INACTIVE, so DescribeClusters keeps showing it
		// as ECS does for a while after deletion; ListClusters skips it.
		rec.Cluster.Status = ecstypes.String("INACTIVE")
		if err := tx.Put(model.KindCluster, sc.ClusterKey(name), rec); err != nil {
			return err
		}
		out, err = clusterView(tx, sc, rec, nil)
		if err != nil {
			return err
		}
		return DeleteResourceTags(tx, *rec.Cluster.ClusterArn)
	})
	if err != nil {
		return nil, err
	}
	return &ecstypes.DeleteClusterResponse{Cluster: out}, nil
}
