package model

import (
	"encoding/json"
	"strconv"
	"strings"

	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/state"
)

// ParseTaskDefinitionRef splits "family", "family:revision" or a task
// definition ARN. revision is 0 when the reference names only the family.
func ParseTaskDefinitionRef(ref string) (family string, revision int32, ok bool) {
	if strings.HasPrefix(ref, "arn:") {
		i := strings.Index(ref, ":task-definition/")
		if i < 0 {
			return "", 0, false
		}
		ref = ref[i+len(":task-definition/"):]
	}
	family, rev, hasRev := strings.Cut(ref, ":")
	if family == "" {
		return "", 0, false
	}
	if !hasRev {
		return family, 0, true
	}
	n, err := strconv.ParseInt(rev, 10, 32)
	if err != nil || n < 1 {
		return "", 0, false
	}
	return family, int32(n), true
}

// GetTaskDefinition finds a task definition by family, family:revision or
// ARN. A bare family means its latest ACTIVE revision, as RunTask and
// DescribeTaskDefinition take it. It returns nil when there is none.
func GetTaskDefinition(tx state.Tx, sc Scope, ref string) (*ecstypes.TaskDefinition, error) {
	family, rev, ok := ParseTaskDefinitionRef(ref)
	if !ok {
		return nil, nil
	}
	if rev > 0 {
		var td ecstypes.TaskDefinition
		found, err := tx.Get(KindTaskDefinition, sc.TaskDefinitionKey(family, rev), &td)
		if err != nil || !found {
			return nil, err
		}
		return &td, nil
	}
	var latest *ecstypes.TaskDefinition
	err := tx.Scan(KindTaskDefinition, sc.Prefix()+family+"/", "", 0, func(_ string, data []byte) error {
		var td ecstypes.TaskDefinition
		if err := json.Unmarshal(data, &td); err != nil {
			return err
		}
		if ecstypes.Deref(td.Status) == "ACTIVE" {
			latest = &td
		}
		return nil
	})
	return latest, err
}
