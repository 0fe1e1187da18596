package ecs

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"math/big"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/model"
	"github.com/gantry-dev/gantry/internal/state"
)

func (s *Service) serviceOps() map[string]awsapi.Handler {
	return map[string]awsapi.Handler{
		"CreateService":           awsapi.Op(s.createService),
		"DescribeServices":        awsapi.Op(s.describeServices),
		"ListServices":            awsapi.Op(s.listServices),
		"ListServicesByNamespace": awsapi.Op(s.listServicesByNamespace),
		"UpdateService":           awsapi.Op(s.updateService),
		"DeleteService":           awsapi.Op(s.deleteService),
	}
}

var serviceNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,255}$`)

func serviceNotFound() error {
	return awsapi.Errorf("ServiceNotFoundException", "Service not found.")
}

// serviceGroup is the task group of a service's tasks, which ListTasks'
// serviceName filter matches.
func serviceGroup(name string) string { return "service:" + name }

// serviceNameOf accepts a service's name or ARN (service/CLUSTER/NAME, or
// the old service/NAME); ok is false for an ARN of another cluster, account
// or region.
func serviceNameOf(sc model.Scope, cluster, ref string) (string, bool) {
	if !strings.HasPrefix(ref, "arn:") {
		return ref, serviceNameRE.MatchString(ref)
	}
	parts := strings.SplitN(ref, ":", 6)
	if len(parts) != 6 || parts[2] != "ecs" || parts[3] != sc.Region || parts[4] != sc.Account {
		return "", false
	}
	path, ok := strings.CutPrefix(parts[5], "service/")
	if !ok {
		return "", false
	}
	if c, rest, ok := strings.Cut(path, "/"); ok {
		if c != cluster {
			return "", false
		}
		path = rest
	}
	return path, serviceNameRE.MatchString(path)
}

// getService loads a service of cluster by name or ARN; nil when there is
// none (INACTIVE services are still returned).
func getService(tx state.Tx, sc model.Scope, cluster, ref string) (*model.ServiceRecord, string, error) {
	name, ok := serviceNameOf(sc, cluster, ref)
	if !ok {
		return nil, "", nil
	}
	key := sc.ServiceKey(cluster, name)
	var rec model.ServiceRecord
	found, err := tx.Get(model.KindService, key, &rec)
	if err != nil || !found {
		return nil, key, err
	}
	return &rec, key, nil
}

// activeService loads a service that must be ACTIVE for the operation.
func activeService(tx state.Tx, sc model.Scope, cluster, ref string) (*model.ServiceRecord, string, error) {
	rec, key, err := getService(tx, sc, cluster, ref)
	if err != nil {
		return nil, "", err
	}
	if rec == nil || ecstypes.Deref(rec.Service.Status) == "INACTIVE" {
		return nil, "", serviceNotFound()
	}
	if ecstypes.Deref(rec.Service.Status) != "ACTIVE" {
		return nil, "", awsapi.Errorf("ServiceNotActiveException", "Service was not ACTIVE.")
	}
	return rec, key, nil
}

// serviceTasks is every stored task of a service, stopped ones included.
func serviceTasks(tx state.Tx, sc model.Scope, cluster, name string) ([]*model.TaskRecord, error) {
	var out []*model.TaskRecord
	group := serviceGroup(name)
	err := tx.Scan(model.KindTask, sc.Prefix()+cluster+"/", "", 0, func(_ string, data []byte) error {
		var r model.TaskRecord
		if err := json.Unmarshal(data, &r); err != nil {
			return err
		}
		if ecstypes.Deref(r.Task.Group) == group {
			out = append(out, &r)
		}
		return nil
	})
	return out, err
}

// Task classes as a service counts them.
func taskRunning(t *ecstypes.Task) bool {
	return ecstypes.Deref(t.DesiredStatus) == "RUNNING" && ecstypes.Deref(t.LastStatus) == "RUNNING"
}

func taskPending(t *ecstypes.Task) bool {
	switch ecstypes.Deref(t.LastStatus) {
	case "PROVISIONING", "PENDING", "ACTIVATING":
		return ecstypes.Deref(t.DesiredStatus) == "RUNNING"
	}
	return false
}

func taskLive(t *ecstypes.Task) bool { return ecstypes.Deref(t.LastStatus) != "STOPPED" }

// taskFailed is a task that ended by itself: it failed to start or its
// essential container exited. Stops asked for by a user or the scheduler
// are not failures.
func taskFailed(r *model.TaskRecord) bool {
	if ecstypes.Deref(r.Task.LastStatus) != "STOPPED" {
		return false
	}
	switch ecstypes.Deref(r.Task.StopCode) {
	case "TaskFailedToStart", "EssentialContainerExited":
		return true
	}
	return false
}

// countDeployments fills in each deployment's and the service's counts from
// its tasks.
func countDeployments(svc *ecstypes.Service, tasks []*model.TaskRecord) {
	var running, pending int32
	for _, d := range svc.Deployments {
		var dr, dp, df int32
		for _, r := range tasks {
			if ecstypes.Deref(r.Task.StartedBy) != ecstypes.Deref(d.Id) {
				continue
			}
			switch {
			case taskRunning(&r.Task):
				dr++
			case taskPending(&r.Task):
				dp++
			case taskFailed(r):
				df++
			}
		}
		d.RunningCount, d.PendingCount, d.FailedTasks = ecstypes.Int32(dr), ecstypes.Int32(dp), ecstypes.Int32(df)
		running += dr
		pending += dp
	}
	svc.RunningCount, svc.PendingCount = ecstypes.Int32(running), ecstypes.Int32(pending)
}

// serviceView is a stored service as the API shows it.
func serviceView(tx state.Tx, sc model.Scope, rec *model.ServiceRecord, withTags bool) (*ecstypes.Service, error) {
	svc := cloneService(&rec.Service)
	cluster := model.ClusterName(svc.ClusterArn)
	tasks, err := serviceTasks(tx, sc, cluster, ecstypes.Deref(svc.ServiceName))
	if err != nil {
		return nil, err
	}
	countDeployments(svc, tasks)
	svc.Tags = nil
	if withTags {
		if svc.Tags, err = ResourceTags(tx, ecstypes.Deref(svc.ServiceArn)); err != nil {
			return nil, err
		}
	}
	if svc.Events == nil {
		svc.Events = []*ecstypes.ServiceEvent{}
	}
	return svc, nil
}

// cloneService deep-copies a service, so views never alias stored records.
func cloneService(in *ecstypes.Service) *ecstypes.Service {
	b, _ := json.Marshal(in)
	var out ecstypes.Service
	json.Unmarshal(b, &out)
	return &out
}

// newDeploymentID makes an id in ECS's form: ecs-svc/ and 19 digits.
func newDeploymentID() string {
	n, _ := rand.Int(rand.Reader, big.NewInt(9e18))
	return fmt.Sprintf("ecs-svc/%019d", n.Int64()+1e18)
}

// deploymentConfig applies ECS's defaults and checks the ranges.
func deploymentConfig(cur, in *ecstypes.DeploymentConfiguration) (*ecstypes.DeploymentConfiguration, error) {
	out := &ecstypes.DeploymentConfiguration{
		MaximumPercent:           ecstypes.Int32(200),
		MinimumHealthyPercent:    ecstypes.Int32(100),
		DeploymentCircuitBreaker: &ecstypes.DeploymentCircuitBreaker{Enable: ecstypes.Bool(false), Rollback: ecstypes.Bool(false)},
	}
	if cur != nil {
		c := *cur
		out = &c
	}
	if in == nil {
		return out, nil
	}
	if in.Strategy != nil && *in.Strategy != "ROLLING" {
		return nil, awsapi.InvalidParameter("deploymentConfiguration.strategy %s is not supported: Gantry does rolling deployments only.", *in.Strategy)
	}
	if in.MaximumPercent != nil {
		out.MaximumPercent = in.MaximumPercent
	}
	if in.MinimumHealthyPercent != nil {
		out.MinimumHealthyPercent = in.MinimumHealthyPercent
	}
	if cb := in.DeploymentCircuitBreaker; cb != nil {
		if cb.Enable == nil || cb.Rollback == nil {
			return nil, awsapi.InvalidParameter("deploymentCircuitBreaker requires both enable and rollback.")
		}
		out.DeploymentCircuitBreaker = &ecstypes.DeploymentCircuitBreaker{Enable: cb.Enable, Rollback: cb.Rollback}
	}
	if in.Alarms != nil {
		out.Alarms = in.Alarms
	}
	if in.BakeTimeInMinutes != nil {
		out.BakeTimeInMinutes = in.BakeTimeInMinutes
	}
	minH, maxP := ecstypes.Deref(out.MinimumHealthyPercent), ecstypes.Deref(out.MaximumPercent)
	if minH < 0 || minH > 100 {
		return nil, awsapi.InvalidParameter("deploymentConfiguration.minimumHealthyPercent must be between 0 and 100.")
	}
	if maxP < 100 || maxP > 200 {
		return nil, awsapi.InvalidParameter("deploymentConfiguration.maximumPercent must be between 100 and 200.")
	}
	if minH == 100 && maxP == 100 {
		return nil, awsapi.InvalidParameter("deploymentConfiguration: maximumPercent must be greater than minimumHealthyPercent, or no task could ever be replaced.")
	}
	return out, nil
}

// checkServiceTaskDefinition resolves and checks a service's task
// definition: it must exist, be ACTIVE and run on Fargate.
func checkServiceTaskDefinition(tx state.Tx, sc model.Scope, ref string) (*ecstypes.TaskDefinition, error) {
	if strings.TrimSpace(ref) == "" {
		return nil, awsapi.InvalidParameter("taskDefinition can not be blank.")
	}
	td, err := model.GetTaskDefinition(tx, sc, ref)
	if err != nil {
		return nil, err
	}
	if td == nil {
		return nil, awsapi.ClientException("TaskDefinition not found.")
	}
	if ecstypes.Deref(td.Status) != "ACTIVE" {
		return nil, awsapi.ClientException("TaskDefinition is inactive")
	}
	if !slices.Contains(td.Compatibilities, "FARGATE") {
		return nil, awsapi.InvalidParameter("Task definition does not support launch_type FARGATE.")
	}
	return td, nil
}

func checkLaunch(launchType *string, strategy []*ecstypes.CapacityProviderStrategyItem, platform *string) error {
	if launchType != nil && len(strategy) > 0 {
		return awsapi.InvalidParameter("Specifying both a launch type and capacity provider strategy is not supported. Remove one and try again.")
	}
	if err := enumParam("launchType", launchType, "LaunchType"); err != nil {
		return err
	}
	if launchType != nil && *launchType != "FARGATE" {
		return awsapi.InvalidParameter("launchType %s is not supported: Gantry runs FARGATE tasks only.", *launchType)
	}
	for _, item := range strategy {
		if item == nil || ecstypes.Deref(item.CapacityProvider) == "" {
			return awsapi.InvalidParameter("capacityProvider can not be blank.")
		}
	}
	if v := ecstypes.Deref(platform); v != "" && v != "LATEST" && v != platformVersion {
		return awsapi.InvalidParameter("The specified platform version (%s) does not exist. Gantry supports LATEST and %s.", v, platformVersion)
	}
	return nil
}

// checkLoadBalancers checks loadBalancers against the task definition. They
// are stored with the service; registering targets is the load balancer's
// part and builds on this.
func checkLoadBalancers(lbs []*ecstypes.LoadBalancer, td *ecstypes.TaskDefinition) error {
	if len(lbs) > 5 {
		return awsapi.InvalidParameter("loadBalancers can have at most 5 items.")
	}
	for _, lb := range lbs {
		if lb == nil || (ecstypes.Deref(lb.TargetGroupArn) == "" && ecstypes.Deref(lb.LoadBalancerName) == "") {
			return awsapi.InvalidParameter("loadBalancers: targetGroupArn must be specified.")
		}
		if ecstypes.Deref(lb.ContainerName) == "" || lb.ContainerPort == nil {
			return awsapi.InvalidParameter("loadBalancers: containerName and containerPort must be specified.")
		}
		var cd *ecstypes.ContainerDefinition
		for _, c := range td.ContainerDefinitions {
			if ecstypes.Deref(c.Name) == *lb.ContainerName {
				cd = c
			}
		}
		if cd == nil {
			return awsapi.InvalidParameter("The container %s does not exist in the task definition.", *lb.ContainerName)
		}
		if !slices.ContainsFunc(cd.PortMappings, func(pm *ecstypes.PortMapping) bool {
			return pm != nil && ecstypes.Deref(pm.ContainerPort) == *lb.ContainerPort
		}) {
			return awsapi.InvalidParameter("The container %s did not have a container port %d defined.", *lb.ContainerName, *lb.ContainerPort)
		}
	}
	return nil
}

func checkServiceNetwork(tx state.Tx, sc model.Scope, td *ecstypes.TaskDefinition, nc *ecstypes.NetworkConfiguration) error {
	if nc != nil && nc.AwsvpcConfiguration != nil {
		if err := enumParam("assignPublicIp", nc.AwsvpcConfiguration.AssignPublicIp, "AssignPublicIp"); err != nil {
			return err
		}
	}
	_, _, err := taskNetwork(tx, sc, td, nc)
	return err
}

type servicesOut struct {
	Services []*ecstypes.Service `json:"services"`
	Failures []*ecstypes.Failure `json:"failures"`
}

func (s *Service) createService(ctx context.Context, in *ecstypes.CreateServiceRequest) (*ecstypes.CreateServiceResponse, error) {
	name := ecstypes.Deref(in.ServiceName)
	if name == "" {
		return nil, awsapi.InvalidParameter("serviceName can not be blank.")
	}
	if !serviceNameRE.MatchString(name) {
		return nil, awsapi.InvalidParameter("serviceName can have up to 255 letters (uppercase and lowercase), numbers, hyphens and underscores.")
	}
	if n := in.DesiredCount; n != nil && *n < 0 {
		return nil, awsapi.InvalidParameter("desiredCount must be at least 0.")
	}
	if err := enumParam("schedulingStrategy", in.SchedulingStrategy, "SchedulingStrategy"); err != nil {
		return nil, err
	}
	if ecstypes.Deref(in.SchedulingStrategy) == "DAEMON" {
		return nil, awsapi.InvalidParameter("The DAEMON scheduling strategy is not supported with the FARGATE launch type.")
	}
	if dc := in.DeploymentController; dc != nil && ecstypes.Deref(dc.Type_) != "ECS" {
		return nil, awsapi.InvalidParameter("deploymentController type %s is not supported: Gantry has the ECS deployment controller only.", ecstypes.Deref(dc.Type_))
	}
	if err := checkLaunch(in.LaunchType, in.CapacityProviderStrategy, in.PlatformVersion); err != nil {
		return nil, err
	}
	if err := enumParam("propagateTags", in.PropagateTags, "PropagateTags"); err != nil {
		return nil, err
	}
	if g := in.HealthCheckGracePeriodSeconds; g != nil && *g < 0 {
		return nil, awsapi.InvalidParameter("healthCheckGracePeriodSeconds must be at least 0.")
	}
	if err := validateTags(in.Tags); err != nil {
		return nil, err
	}
	cfg, err := deploymentConfig(nil, in.DeploymentConfiguration)
	if err != nil {
		return nil, err
	}
	sc := scopeOf(ctx)
	var out *ecstypes.Service
	err = s.Store.Update(ctx, func(tx state.Tx) error {
		cluster, err := taskCluster(tx, sc, in.Cluster)
		if err != nil {
			return err
		}
		clusterName := ecstypes.Deref(cluster.ClusterName)
		old, key, err := getService(tx, sc, clusterName, name)
		if err != nil {
			return err
		}
		if old != nil && ecstypes.Deref(old.Service.Status) != "INACTIVE" {
			return awsapi.InvalidParameter("Creation of service was not idempotent.")
		}
		td, err := checkServiceTaskDefinition(tx, sc, ecstypes.Deref(in.TaskDefinition))
		if err != nil {
			return err
		}
		if err := checkServiceNetwork(tx, sc, td, in.NetworkConfiguration); err != nil {
			return err
		}
		if err := checkLoadBalancers(in.LoadBalancers, td); err != nil {
			return err
		}
		now := s.now()
		launchType := in.LaunchType
		if launchType == nil && len(in.CapacityProviderStrategy) == 0 && len(cluster.DefaultCapacityProviderStrategy) == 0 {
			launchType = ecstypes.String("FARGATE")
		}
		strategy := in.CapacityProviderStrategy
		if launchType == nil && len(strategy) == 0 {
			strategy = cluster.DefaultCapacityProviderStrategy
		}
		desired := ecstypes.Deref(in.DesiredCount)
		svc := ecstypes.Service{
			ServiceArn:                    ecstypes.String(sc.ServiceARN(clusterName, name)),
			ServiceName:                   ecstypes.String(name),
			ClusterArn:                    cluster.ClusterArn,
			CreatedAt:                     ecstypes.At(now),
			CreatedBy:                     ecstypes.String(fmt.Sprintf("arn:aws:iam::%s:root", sc.Account)),
			Status:                        ecstypes.String("ACTIVE"),
			DesiredCount:                  ecstypes.Int32(desired),
			TaskDefinition:                td.TaskDefinitionArn,
			LaunchType:                    launchType,
			CapacityProviderStrategy:      strategy,
			PlatformVersion:               ecstypes.String(ecstypes.Deref(in.PlatformVersion)),
			PlatformFamily:                ecstypes.String(platformFamily),
			NetworkConfiguration:          in.NetworkConfiguration,
			LoadBalancers:                 nonNil(in.LoadBalancers),
			ServiceRegistries:             nonNil(in.ServiceRegistries),
			DeploymentConfiguration:       cfg,
			DeploymentController:          &ecstypes.DeploymentController{Type_: ecstypes.String("ECS")},
			HealthCheckGracePeriodSeconds: in.HealthCheckGracePeriodSeconds,
			SchedulingStrategy:            ecstypes.String("REPLICA"),
			PlacementConstraints:          nonNil(in.PlacementConstraints),
			PlacementStrategy:             nonNil(in.PlacementStrategy),
			PropagateTags:                 ecstypes.String(ecstypes.Deref(in.PropagateTags)),
			EnableECSManagedTags:          ecstypes.Bool(ecstypes.Deref(in.EnableECSManagedTags)),
			EnableExecuteCommand:          ecstypes.Bool(ecstypes.Deref(in.EnableExecuteCommand)),
			AvailabilityZoneRebalancing:   ecstypes.String("ENABLED"),
			Events:                        []*ecstypes.ServiceEvent{},
		}
		if ecstypes.Deref(svc.PlatformVersion) == "" {
			svc.PlatformVersion = ecstypes.String("LATEST")
		}
		if ecstypes.Deref(svc.PropagateTags) == "" {
			svc.PropagateTags = ecstypes.String("NONE")
		}
		if in.HealthCheckGracePeriodSeconds == nil {
			svc.HealthCheckGracePeriodSeconds = ecstypes.Int32(0)
		}
		svc.Deployments = []*ecstypes.Deployment{newDeployment(&svc, now)}
		rec := &model.ServiceRecord{Service: svc, FailuresSince: ecstypes.At(now)}
		// A service made again under the name of an INACTIVE one starts
		// afresh: its old tags go with the old one.
		if err := DeleteResourceTags(tx, *svc.ServiceArn); err != nil {
			return err
		}
		if len(in.Tags) > 0 {
			if err := AddResourceTags(tx, *svc.ServiceArn, in.Tags); err != nil {
				return err
			}
		}
		if err := tx.Put(model.KindService, key, rec); err != nil {
			return err
		}
		out, err = serviceView(tx, sc, rec, true)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.wakeScheduler()
	return &ecstypes.CreateServiceResponse{Service: out}, nil
}

func nonNil[T any](v []T) []T {
	if v == nil {
		return []T{}
	}
	return v
}

// newDeployment is a PRIMARY deployment of the service's current settings.
func newDeployment(svc *ecstypes.Service, now time.Time) *ecstypes.Deployment {
	t := ecstypes.At(now)
	id := newDeploymentID()
	d := &ecstypes.Deployment{
		Id:                       ecstypes.String(id),
		Status:                   ecstypes.String("PRIMARY"),
		TaskDefinition:           svc.TaskDefinition,
		DesiredCount:             svc.DesiredCount,
		PendingCount:             ecstypes.Int32(0),
		RunningCount:             ecstypes.Int32(0),
		FailedTasks:              ecstypes.Int32(0),
		LaunchType:               svc.LaunchType,
		CapacityProviderStrategy: svc.CapacityProviderStrategy,
		PlatformVersion:          ecstypes.String(platformVersion),
		PlatformFamily:           ecstypes.String(platformFamily),
		NetworkConfiguration:     svc.NetworkConfiguration,
		RolloutState:             ecstypes.String("IN_PROGRESS"),
		RolloutStateReason:       ecstypes.String(fmt.Sprintf("ECS deployment %s in progress.", id)),
		CreatedAt:                t,
		UpdatedAt:                ecstypes.At(now),
	}
	return d
}

func (s *Service) describeServices(ctx context.Context, in *ecstypes.DescribeServicesRequest) (*servicesOut, error) {
	withTags := false
	for _, f := range in.Include {
		if f != "TAGS" {
			return nil, awsapi.InvalidParameter("Invalid include value '%s'. Valid values: TAGS.", f)
		}
		withTags = true
	}
	if len(in.Services) == 0 {
		return nil, awsapi.InvalidParameter("Services cannot be empty.")
	}
	if len(in.Services) > 10 {
		return nil, awsapi.InvalidParameter("Services can have at most 10 items.")
	}
	sc := scopeOf(ctx)
	out := &servicesOut{Services: []*ecstypes.Service{}, Failures: []*ecstypes.Failure{}}
	err := s.Store.View(ctx, func(tx state.Tx) error {
		cluster, err := taskCluster(tx, sc, in.Cluster)
		if err != nil {
			return err
		}
		clusterName := ecstypes.Deref(cluster.ClusterName)
		seen := map[string]bool{}
		for _, ref := range in.Services {
			rec, key, err := getService(tx, sc, clusterName, ref)
			if err != nil {
				return err
			}
			if rec == nil {
				arn := ref
				if !strings.HasPrefix(ref, "arn:") {
					arn = sc.ServiceARN(clusterName, ref)
				}
				out.Failures = append(out.Failures, &ecstypes.Failure{Arn: ecstypes.String(arn), Reason: ecstypes.String("MISSING")})
				continue
			}
			if seen[key] {
				continue
			}
			seen[key] = true
			v, err := serviceView(tx, sc, rec, withTags)
			if err != nil {
				return err
			}
			out.Services = append(out.Services, v)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

type listServicesOut struct {
	ServiceArns []string `json:"serviceArns"`
	NextToken   *string  `json:"nextToken,omitempty"`
}

func (s *Service) listServices(ctx context.Context, in *ecstypes.ListServicesRequest) (*listServicesOut, error) {
	if err := enumParam("launchType", in.LaunchType, "LaunchType"); err != nil {
		return nil, err
	}
	if err := enumParam("schedulingStrategy", in.SchedulingStrategy, "SchedulingStrategy"); err != nil {
		return nil, err
	}
	limit := 10
	if in.MaxResults != nil {
		if *in.MaxResults < 1 || *in.MaxResults > 100 {
			return nil, awsapi.InvalidParameter("maxResults must be between 1 and 100.")
		}
		limit = int(*in.MaxResults)
	}
	after, ok := model.DecodeToken(in.NextToken)
	if !ok {
		return nil, awsapi.InvalidParameter("Invalid nextToken.")
	}
	sc := scopeOf(ctx)
	out := &listServicesOut{ServiceArns: []string{}}
	err := s.Store.View(ctx, func(tx state.Tx) error {
		cluster, err := taskCluster(tx, sc, in.Cluster)
		if err != nil {
			return err
		}
		prefix := sc.ServiceKey(ecstypes.Deref(cluster.ClusterName), "")
		if after != "" && !strings.HasPrefix(after, prefix) {
			return awsapi.InvalidParameter("Invalid nextToken.")
		}
		last := ""
		return tx.Scan(model.KindService, prefix, after, 0, func(key string, data []byte) error {
			var r model.ServiceRecord
			if err := json.Unmarshal(data, &r); err != nil {
				return err
			}
			svc := &r.Service
			switch {
			case ecstypes.Deref(svc.Status) == "INACTIVE":
				return nil
			case in.LaunchType != nil && ecstypes.Deref(svc.LaunchType) != *in.LaunchType:
				return nil
			case in.SchedulingStrategy != nil && ecstypes.Deref(svc.SchedulingStrategy) != *in.SchedulingStrategy:
				return nil
			}
			if len(out.ServiceArns) == limit {
				out.NextToken = ecstypes.String(model.EncodeToken(last))
				return state.ErrStop
			}
			out.ServiceArns = append(out.ServiceArns, ecstypes.Deref(svc.ServiceArn))
			last = key
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// listServicesByNamespace answers for Service Connect namespaces. Gantry has
// no Cloud Map namespaces yet, so no service is in one: the request is
// checked and the list is empty.
func (s *Service) listServicesByNamespace(ctx context.Context, in *ecstypes.ListServicesByNamespaceRequest) (*listServicesOut, error) {
	if strings.TrimSpace(ecstypes.Deref(in.Namespace)) == "" {
		return nil, awsapi.InvalidParameter("namespace can not be blank.")
	}
	if in.MaxResults != nil && (*in.MaxResults < 1 || *in.MaxResults > 100) {
		return nil, awsapi.InvalidParameter("maxResults must be between 1 and 100.")
	}
	if _, ok := model.DecodeToken(in.NextToken); !ok {
		return nil, awsapi.InvalidParameter("Invalid nextToken.")
	}
	return &listServicesOut{ServiceArns: []string{}}, nil
}

func (s *Service) updateService(ctx context.Context, in *ecstypes.UpdateServiceRequest) (*ecstypes.UpdateServiceResponse, error) {
	if ecstypes.Deref(in.Service) == "" {
		return nil, awsapi.InvalidParameter("service can not be blank.")
	}
	if n := in.DesiredCount; n != nil && *n < 0 {
		return nil, awsapi.InvalidParameter("desiredCount must be at least 0.")
	}
	if dc := in.DeploymentController; dc != nil && ecstypes.Deref(dc.Type_) != "ECS" {
		return nil, awsapi.InvalidParameter("deploymentController type %s is not supported: Gantry has the ECS deployment controller only.", ecstypes.Deref(dc.Type_))
	}
	if err := checkLaunch(nil, in.CapacityProviderStrategy, in.PlatformVersion); err != nil {
		return nil, err
	}
	if err := enumParam("propagateTags", in.PropagateTags, "PropagateTags"); err != nil {
		return nil, err
	}
	if g := in.HealthCheckGracePeriodSeconds; g != nil && *g < 0 {
		return nil, awsapi.InvalidParameter("healthCheckGracePeriodSeconds must be at least 0.")
	}
	sc := scopeOf(ctx)
	var out *ecstypes.Service
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		cluster, err := taskCluster(tx, sc, in.Cluster)
		if err != nil {
			return err
		}
		rec, key, err := activeService(tx, sc, ecstypes.Deref(cluster.ClusterName), *in.Service)
		if err != nil {
			return err
		}
		svc := &rec.Service
		redeploy := ecstypes.Deref(in.ForceNewDeployment)
		td, err := checkServiceTaskDefinition(tx, sc, ecstypes.Deref(svc.TaskDefinition))
		if in.TaskDefinition != nil {
			if td, err = checkServiceTaskDefinition(tx, sc, *in.TaskDefinition); err != nil {
				return err
			}
			redeploy = redeploy || ecstypes.Deref(td.TaskDefinitionArn) != ecstypes.Deref(svc.TaskDefinition)
			svc.TaskDefinition = td.TaskDefinitionArn
		} else if err != nil {
			// The current revision was deregistered since: only a change
			// that needs no new tasks of it can go ahead.
			td = nil
		}
		if in.NetworkConfiguration != nil {
			if td == nil {
				return awsapi.ClientException("TaskDefinition is inactive")
			}
			if err := checkServiceNetwork(tx, sc, td, in.NetworkConfiguration); err != nil {
				return err
			}
			redeploy = redeploy || !sameJSON(in.NetworkConfiguration, svc.NetworkConfiguration)
			svc.NetworkConfiguration = in.NetworkConfiguration
		}
		if in.LoadBalancers != nil {
			if td == nil {
				return awsapi.ClientException("TaskDefinition is inactive")
			}
			if err := checkLoadBalancers(in.LoadBalancers, td); err != nil {
				return err
			}
			redeploy = redeploy || !sameJSON(in.LoadBalancers, svc.LoadBalancers)
			svc.LoadBalancers = in.LoadBalancers
		}
		if len(in.CapacityProviderStrategy) > 0 {
			redeploy = redeploy || !sameJSON(in.CapacityProviderStrategy, svc.CapacityProviderStrategy)
			svc.CapacityProviderStrategy, svc.LaunchType = in.CapacityProviderStrategy, nil
		}
		if in.PlatformVersion != nil {
			svc.PlatformVersion = in.PlatformVersion
		}
		if in.DeploymentConfiguration != nil {
			if svc.DeploymentConfiguration, err = deploymentConfig(svc.DeploymentConfiguration, in.DeploymentConfiguration); err != nil {
				return err
			}
		}
		if in.HealthCheckGracePeriodSeconds != nil {
			svc.HealthCheckGracePeriodSeconds = in.HealthCheckGracePeriodSeconds
		}
		if in.PropagateTags != nil {
			svc.PropagateTags = in.PropagateTags
		}
		if in.EnableECSManagedTags != nil {
			svc.EnableECSManagedTags = in.EnableECSManagedTags
		}
		if in.EnableExecuteCommand != nil {
			svc.EnableExecuteCommand = in.EnableExecuteCommand
		}
		if in.DesiredCount != nil {
			SetDesiredCount(rec, *in.DesiredCount)
		}
		if redeploy {
			if td == nil {
				return awsapi.ClientException("TaskDefinition is inactive")
			}
			startDeployment(rec, s.now())
		}
		if err := tx.Put(model.KindService, key, rec); err != nil {
			return err
		}
		out, err = serviceView(tx, sc, rec, false)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.wakeScheduler()
	return &ecstypes.UpdateServiceResponse{Service: out}, nil
}

// SetDesiredCount changes how many tasks a service keeps. It is the one way
// the count changes, for UpdateService and, later, for automatic scaling.
func SetDesiredCount(rec *model.ServiceRecord, n int32) {
	svc := &rec.Service
	if ecstypes.Deref(svc.DesiredCount) == n {
		return
	}
	svc.DesiredCount = ecstypes.Int32(n)
	for _, d := range svc.Deployments {
		if ecstypes.Deref(d.Status) == "PRIMARY" {
			d.DesiredCount = ecstypes.Int32(n)
		}
	}
	rec.Steady = false
}

// ScaleService sets an ACTIVE service's desired count, for Application Auto
// Scaling, and wakes the scheduler. It returns the count before.
func (s *Service) ScaleService(ctx context.Context, sc model.Scope, cluster, name string, n int32) (int32, error) {
	var prev int32
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		rec, key, err := activeService(tx, sc, cluster, name)
		if err != nil {
			return err
		}
		prev = ecstypes.Deref(rec.Service.DesiredCount)
		if prev == n {
			return nil
		}
		SetDesiredCount(rec, n)
		return tx.Put(model.KindService, key, rec)
	})
	if err != nil {
		return 0, err
	}
	if prev != n {
		s.wakeScheduler()
	}
	return prev, nil
}

// startDeployment makes the service's current settings a new PRIMARY
// deployment; the ones before it become ACTIVE and drain as it rolls out.
func startDeployment(rec *model.ServiceRecord, now time.Time) *ecstypes.Deployment {
	svc := &rec.Service
	for _, d := range svc.Deployments {
		if ecstypes.Deref(d.Status) == "PRIMARY" {
			d.Status = ecstypes.String("ACTIVE")
			d.UpdatedAt = ecstypes.At(now)
		}
	}
	d := newDeployment(svc, now)
	svc.Deployments = append([]*ecstypes.Deployment{d}, svc.Deployments...)
	rec.Steady = false
	return d
}

func sameJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func (s *Service) deleteService(ctx context.Context, in *ecstypes.DeleteServiceRequest) (*ecstypes.DeleteServiceResponse, error) {
	if ecstypes.Deref(in.Service) == "" {
		return nil, awsapi.InvalidParameter("service can not be blank.")
	}
	sc := scopeOf(ctx)
	var out *ecstypes.Service
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		cluster, err := taskCluster(tx, sc, in.Cluster)
		if err != nil {
			return err
		}
		rec, key, err := getService(tx, sc, ecstypes.Deref(cluster.ClusterName), *in.Service)
		if err != nil {
			return err
		}
		if rec == nil || ecstypes.Deref(rec.Service.Status) == "INACTIVE" {
			return serviceNotFound()
		}
		if ecstypes.Deref(rec.Service.Status) == "ACTIVE" {
			if ecstypes.Deref(rec.Service.DesiredCount) > 0 && !ecstypes.Deref(in.Force) {
				return awsapi.InvalidParameter("The service cannot be stopped while it is scaled above 0.")
			}
			SetDesiredCount(rec, 0)
			rec.Service.Status = ecstypes.String("DRAINING")
			if err := tx.Put(model.KindService, key, rec); err != nil {
				return err
			}
		}
		out, err = serviceView(tx, sc, rec, false)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.wakeScheduler()
	return &ecstypes.DeleteServiceResponse{Service: out}, nil
}

// ActiveServicesCount counts a cluster's services that are not yet
// INACTIVE (draining ones still hold the cluster), for DescribeClusters and
// DeleteCluster.
func ActiveServicesCount(tx state.Tx, sc model.Scope, cluster string) (int32, error) {
	var n int32
	err := tx.Scan(model.KindService, sc.ServiceKey(cluster, ""), "", 0, func(_ string, data []byte) error {
		var r struct {
			Service struct {
				Status string `json:"status"`
			} `json:"service"`
		}
		if err := json.Unmarshal(data, &r); err != nil {
			return err
		}
		if r.Service.Status != "INACTIVE" {
			n++
		}
		return nil
	})
	return n, err
}
