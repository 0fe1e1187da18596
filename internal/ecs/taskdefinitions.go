package ecs

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/model"
	"github.com/gantry-dev/gantry/internal/state"
)

func (s *Service) taskDefinitionOps() map[string]awsapi.Handler {
	return map[string]awsapi.Handler{
		"RegisterTaskDefinition":     awsapi.Op(s.registerTaskDefinition),
		"DescribeTaskDefinition":     awsapi.Op(s.describeTaskDefinition),
		"ListTaskDefinitions":        awsapi.Op(s.listTaskDefinitions),
		"ListTaskDefinitionFamilies": awsapi.Op(s.listTaskDefinitionFamilies),
		"DeregisterTaskDefinition":   awsapi.Op(s.deregisterTaskDefinition),
		"DeleteTaskDefinitions":      awsapi.Op(s.deleteTaskDefinitions),
	}
}

// tdJSON renders a task definition as ECS answers it. ECS always returns
// some lists even when empty, and clients index them without checking
// (td["volumes"]); the generated shapes drop empty lists, so they are put
// back here.
type tdJSON struct{ *ecstypes.TaskDefinition }

func (t tdJSON) MarshalJSON() ([]byte, error) {
	m, err := toMap(t.TaskDefinition)
	if err != nil {
		return nil, err
	}
	setEmptyLists(m, "volumes", "placementConstraints", "requiresAttributes")
	var containers []map[string]json.RawMessage
	if err := json.Unmarshal(m["containerDefinitions"], &containers); err != nil {
		return nil, err
	}
	for _, c := range containers {
		setEmptyLists(c, "portMappings", "environment", "mountPoints", "volumesFrom", "systemControls")
	}
	if m["containerDefinitions"], err = json.Marshal(containers); err != nil {
		return nil, err
	}
	return json.Marshal(m)
}

func toMap(v any) (map[string]json.RawMessage, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	return m, json.Unmarshal(b, &m)
}

func setEmptyLists(m map[string]json.RawMessage, keys ...string) {
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			m[k] = json.RawMessage("[]")
		}
	}
}

func render(td *ecstypes.TaskDefinition) *tdJSON {
	if td == nil {
		return nil
	}
	return &tdJSON{td}
}

// taskDefinitionOut answers Register and Describe. Tags is a pointer so that
// an empty list is sent as [] when asked for and left out otherwise.
type taskDefinitionOut struct {
	TaskDefinition *tdJSON          `json:"taskDefinition,omitempty"`
	Tags           *[]*ecstypes.Tag `json:"tags,omitempty"`
}

func (s *Service) registerTaskDefinition(ctx context.Context, in *ecstypes.RegisterTaskDefinitionRequest) (*taskDefinitionOut, error) {
	if err := validateTags(in.Tags); err != nil {
		return nil, err
	}
	td, err := newTaskDefinition(in)
	if err != nil {
		return nil, err
	}
	sc := scopeOf(ctx)
	family := *td.Family
	now := s.now()
	var tags []*ecstypes.Tag
	err = s.Store.Update(ctx, func(tx state.Tx) error {
		var fam model.FamilyRecord
		if _, err := tx.Get(model.KindFamily, sc.FamilyKey(family), &fam); err != nil {
			return err
		}
		fam.LastRevision++
		td.Revision = ecstypes.Int32(fam.LastRevision)
		td.TaskDefinitionArn = ecstypes.String(sc.TaskDefinitionARN(family, fam.LastRevision))
		td.Status = ecstypes.String("ACTIVE")
		td.RegisteredAt = ecstypes.At(now)
		td.RegisteredBy = ecstypes.String("arn:aws:iam::" + sc.Account + ":root")
		if err := tx.Put(model.KindFamily, sc.FamilyKey(family), fam); err != nil {
			return err
		}
		if err := tx.Put(model.KindTaskDefinition, sc.TaskDefinitionKey(family, fam.LastRevision), td); err != nil {
			return err
		}
		if err := AddResourceTags(tx, *td.TaskDefinitionArn, in.Tags); err != nil {
			return err
		}
		if tags, err = ResourceTags(tx, *td.TaskDefinitionArn); err != nil {
			return err
		}
		return purgeDeleted(tx, sc)
	})
	if err != nil {
		return nil, err
	}
	if tags == nil {
		tags = []*ecstypes.Tag{}
	}
	return &taskDefinitionOut{TaskDefinition: render(td), Tags: &tags}, nil
}

func (s *Service) describeTaskDefinition(ctx context.Context, in *ecstypes.DescribeTaskDefinitionRequest) (*taskDefinitionOut, error) {
	withTags := false
	for _, f := range in.Include {
		if f != "TAGS" {
			return nil, awsapi.InvalidParameter("Invalid include value '%s'. Valid values: TAGS.", f)
		}
		withTags = true
	}
	sc := scopeOf(ctx)
	out := &taskDefinitionOut{}
	err := s.Store.View(ctx, func(tx state.Tx) error {
		td, err := model.GetTaskDefinition(tx, sc, ecstypes.Deref(in.TaskDefinition))
		if err != nil || td == nil {
			return err
		}
		out.TaskDefinition = render(td)
		if withTags {
			tags, err := ResourceTags(tx, *td.TaskDefinitionArn)
			if err != nil {
				return err
			}
			if tags == nil {
				tags = []*ecstypes.Tag{}
			}
			out.Tags = &tags
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if out.TaskDefinition == nil {
		return nil, awsapi.ClientException("Unable to describe task definition.")
	}
	return out, nil
}

// taskDefinitionsIn loads every task definition of the caller's scope.
// Listing sorts by family name, which key order does not give ("a-b/" sorts
// before "a/"), so they are sorted here.
func taskDefinitionsIn(tx state.Tx, sc model.Scope) ([]ecstypes.TaskDefinition, error) {
	tds, err := state.List[ecstypes.TaskDefinition](tx, model.KindTaskDefinition, sc.Prefix())
	slices.SortFunc(tds, func(a, b ecstypes.TaskDefinition) int {
		return strings.Compare(sortKey(&a), sortKey(&b))
	})
	return tds, err
}

// sortKey orders by family, then revision; it is also the pagination token.
func sortKey(td *ecstypes.TaskDefinition) string {
	return fmt.Sprintf("%s\x00%010d", ecstypes.Deref(td.Family), ecstypes.Deref(td.Revision))
}

func pageSize(max *int32) (int, error) {
	if max == nil {
		return 100, nil
	}
	if *max < 1 || *max > 100 {
		return 0, awsapi.InvalidParameter("maxResults must be between 1 and 100.")
	}
	return int(*max), nil
}

type listTaskDefinitionsOut struct {
	TaskDefinitionArns []string `json:"taskDefinitionArns"`
	NextToken          *string  `json:"nextToken,omitempty"`
}

func (s *Service) listTaskDefinitions(ctx context.Context, in *ecstypes.ListTaskDefinitionsRequest) (*listTaskDefinitionsOut, error) {
	status := ecstypes.Deref(in.Status)
	if status == "" {
		status = "ACTIVE"
	}
	if !slices.Contains(ecstypes.Enums["TaskDefinitionStatus"], status) {
		return nil, awsapi.InvalidParameter("Invalid status value '%s'. Valid values: ACTIVE, INACTIVE, DELETE_IN_PROGRESS.", status)
	}
	desc := false
	switch ecstypes.Deref(in.Sort) {
	case "", "ASC":
	case "DESC":
		desc = true
	default:
		return nil, awsapi.InvalidParameter("Invalid sort value '%s'. Valid values: ASC, DESC.", *in.Sort)
	}
	max, err := pageSize(in.MaxResults)
	if err != nil {
		return nil, err
	}
	after, ok := model.DecodeToken(in.NextToken)
	if !ok {
		return nil, awsapi.InvalidParameter("Invalid nextToken.")
	}
	var tds []ecstypes.TaskDefinition
	sc := scopeOf(ctx)
	if err := s.Store.View(ctx, func(tx state.Tx) (err error) {
		tds, err = taskDefinitionsIn(tx, sc)
		return err
	}); err != nil {
		return nil, err
	}
	if desc {
		slices.Reverse(tds)
	}
	// familyPrefix names one whole family here, unlike in
	// ListTaskDefinitionFamilies, as the ECS API defines it.
	family := ecstypes.Deref(in.FamilyPrefix)
	out := &listTaskDefinitionsOut{TaskDefinitionArns: []string{}}
	for i := range tds {
		td := &tds[i]
		if ecstypes.Deref(td.Status) != status || (family != "" && *td.Family != family) {
			continue
		}
		if k := sortKey(td); after != "" && (k == after || (k < after) != desc) {
			continue
		}
		if len(out.TaskDefinitionArns) == max {
			out.NextToken = ecstypes.String(model.EncodeToken(after))
			break
		}
		out.TaskDefinitionArns = append(out.TaskDefinitionArns, *td.TaskDefinitionArn)
		after = sortKey(td)
	}
	return out, nil
}

type listFamiliesOut struct {
	Families  []string `json:"families"`
	NextToken *string  `json:"nextToken,omitempty"`
}

func (s *Service) listTaskDefinitionFamilies(ctx context.Context, in *ecstypes.ListTaskDefinitionFamiliesRequest) (*listFamiliesOut, error) {
	status := ecstypes.Deref(in.Status)
	if status == "" {
		status = "ALL"
	}
	if !slices.Contains(ecstypes.Enums["TaskDefinitionFamilyStatus"], status) {
		return nil, awsapi.InvalidParameter("Invalid status value '%s'. Valid values: ACTIVE, INACTIVE, ALL.", status)
	}
	max, err := pageSize(in.MaxResults)
	if err != nil {
		return nil, err
	}
	after, ok := model.DecodeToken(in.NextToken)
	if !ok {
		return nil, awsapi.InvalidParameter("Invalid nextToken.")
	}
	var tds []ecstypes.TaskDefinition
	sc := scopeOf(ctx)
	if err := s.Store.View(ctx, func(tx state.Tx) (err error) {
		tds, err = taskDefinitionsIn(tx, sc)
		return err
	}); err != nil {
		return nil, err
	}
	// A family is active while any of its revisions is.
	active := map[string]bool{}
	var families []string
	for _, td := range tds {
		f := *td.Family
		if !strings.HasPrefix(f, ecstypes.Deref(in.FamilyPrefix)) {
			continue
		}
		if len(families) == 0 || families[len(families)-1] != f {
			families = append(families, f)
		}
		if ecstypes.Deref(td.Status) == "ACTIVE" {
			active[f] = true
		}
	}
	out := &listFamiliesOut{Families: []string{}}
	for _, f := range families {
		if (status == "ACTIVE" && !active[f]) || (status == "INACTIVE" && active[f]) || (after != "" && f <= after) {
			continue
		}
		if len(out.Families) == max {
			out.NextToken = ecstypes.String(model.EncodeToken(after))
			break
		}
		out.Families = append(out.Families, f)
		after = f
	}
	return out, nil
}

// exactTaskDefinition resolves family:revision or an ARN; deregistering and
// deleting never pick a revision on the caller's behalf.
func exactTaskDefinition(tx state.Tx, sc model.Scope, ref string) (*ecstypes.TaskDefinition, error) {
	family, rev, ok := model.ParseTaskDefinitionRef(ref)
	if !ok || rev == 0 {
		return nil, nil
	}
	var td ecstypes.TaskDefinition
	found, err := tx.Get(model.KindTaskDefinition, sc.TaskDefinitionKey(family, rev), &td)
	if err != nil || !found {
		return nil, err
	}
	return &td, nil
}

func (s *Service) deregisterTaskDefinition(ctx context.Context, in *ecstypes.DeregisterTaskDefinitionRequest) (*deregisterOut, error) {
	ref := ecstypes.Deref(in.TaskDefinition)
	if _, rev, ok := model.ParseTaskDefinitionRef(ref); ok && rev == 0 {
		return nil, awsapi.ClientException("Revision must be specified: use family:revision or the full task definition ARN.")
	}
	sc := scopeOf(ctx)
	var td *ecstypes.TaskDefinition
	err := s.Store.Update(ctx, func(tx state.Tx) (err error) {
		td, err = exactTaskDefinition(tx, sc, ref)
		if err != nil || td == nil {
			return err
		}
		switch ecstypes.Deref(td.Status) {
		case "INACTIVE":
			return nil
		case "DELETE_IN_PROGRESS":
			return awsapi.ClientException("The specified task definition is being deleted.")
		}
		td.Status = ecstypes.String("INACTIVE")
		td.DeregisteredAt = ecstypes.At(s.now())
		return tx.Put(model.KindTaskDefinition, sc.TaskDefinitionKey(*td.Family, *td.Revision), td)
	})
	if err != nil {
		return nil, err
	}
	if td == nil {
		return nil, awsapi.ClientException("The specified task definition does not exist.")
	}
	return &deregisterOut{TaskDefinition: render(td)}, nil
}

// deregisterOut renders the task definition with ECS's empty lists.
type deregisterOut struct {
	TaskDefinition *tdJSON `json:"taskDefinition,omitempty"`
}

type deleteTaskDefinitionsOut struct {
	TaskDefinitions []*tdJSON           `json:"taskDefinitions"`
	Failures        []*ecstypes.Failure `json:"failures"`
}

func (s *Service) deleteTaskDefinitions(ctx context.Context, in *ecstypes.DeleteTaskDefinitionsRequest) (*deleteTaskDefinitionsOut, error) {
	if len(in.TaskDefinitions) == 0 || len(in.TaskDefinitions) > 10 {
		return nil, awsapi.InvalidParameter("taskDefinitions must contain between 1 and 10 task definitions.")
	}
	sc := scopeOf(ctx)
	var out *deleteTaskDefinitionsOut
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		out = &deleteTaskDefinitionsOut{TaskDefinitions: []*tdJSON{}, Failures: []*ecstypes.Failure{}}
		fail := func(arn, reason string) {
			out.Failures = append(out.Failures, &ecstypes.Failure{Arn: ecstypes.String(arn), Reason: ecstypes.String(reason)})
		}
		for _, ref := range in.TaskDefinitions {
			family, rev, ok := model.ParseTaskDefinitionRef(ref)
			if !ok || rev == 0 {
				fail(ref, "The task definition must be given as family:revision or a full ARN.")
				continue
			}
			arn := sc.TaskDefinitionARN(family, rev)
			td, err := exactTaskDefinition(tx, sc, ref)
			if err != nil {
				return err
			}
			switch {
			case td == nil:
				fail(arn, "The specified task definition does not exist.")
				continue
			case ecstypes.Deref(td.Status) == "ACTIVE":
				fail(arn, "The specified task definition is still in ACTIVE status. Please deregister the target and try again.")
				continue
			case ecstypes.Deref(td.Status) == "INACTIVE":
				td.Status = ecstypes.String("DELETE_IN_PROGRESS")
				td.DeleteRequestedAt = ecstypes.At(s.now())
				if err := tx.Put(model.KindTaskDefinition, sc.TaskDefinitionKey(family, rev), td); err != nil {
					return err
				}
			}
			out.TaskDefinitions = append(out.TaskDefinitions, render(td))
		}
		return purgeDeleted(tx, sc)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// purgeDeleted removes task definitions whose deletion was requested once no
// unstopped task still uses them; until then they stay DELETE_IN_PROGRESS,
// as in ECS.
func purgeDeleted(tx state.Tx, sc model.Scope) error {
	var doomed []*ecstypes.TaskDefinition
	err := tx.Scan(model.KindTaskDefinition, sc.Prefix(), "", 0, func(_ string, data []byte) error {
		// Cheap filter before decoding the whole definition.
		if !strings.Contains(string(data), `"DELETE_IN_PROGRESS"`) {
			return nil
		}
		var td ecstypes.TaskDefinition
		if err := json.Unmarshal(data, &td); err != nil {
			return err
		}
		if ecstypes.Deref(td.Status) == "DELETE_IN_PROGRESS" {
			doomed = append(doomed, &td)
		}
		return nil
	})
	if err != nil || len(doomed) == 0 {
		return err
	}
	inUse := map[string]bool{}
	tasks, err := state.List[model.TaskRecord](tx, model.KindTask, sc.Prefix())
	if err != nil {
		return err
	}
	for _, t := range tasks {
		if ecstypes.Deref(t.Task.LastStatus) != "STOPPED" {
			inUse[ecstypes.Deref(t.Task.TaskDefinitionArn)] = true
		}
	}
	for _, td := range doomed {
		if inUse[*td.TaskDefinitionArn] {
			continue
		}
		if _, err := tx.Delete(model.KindTaskDefinition, sc.TaskDefinitionKey(*td.Family, *td.Revision)); err != nil {
			return err
		}
		if err := DeleteResourceTags(tx, *td.TaskDefinitionArn); err != nil {
			return err
		}
	}
	return nil
}

// checkTags validates request tags and returns them as stored values.
// task_run.go uses it too.
func checkTags(in []*ecstypes.Tag) ([]ecstypes.Tag, error) {
	if err := validateTags(in); err != nil {
		return nil, err
	}
	out := make([]ecstypes.Tag, len(in))
	for i, t := range in {
		out[i] = ecstypes.Tag{Key: ecstypes.String(*t.Key), Value: ecstypes.String(ecstypes.Deref(t.Value))}
	}
	return out, nil
}

// readTags is ResourceTags; tasks.go and task_run.go use it.
func readTags(tx state.Tx, arn string) ([]*ecstypes.Tag, error) { return ResourceTags(tx, arn) }
