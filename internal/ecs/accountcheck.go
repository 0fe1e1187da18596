package ecs

import "github.com/gantry-dev/gantry/internal/ecs/ecstypes"

// taskRoles are the task and execution roles a task runs with: RunTask's
// overrides win over the task definition, as in ECS.
func taskRoles(td *ecstypes.TaskDefinition, ov *ecstypes.TaskOverride) (task, execution string) {
	task, execution = ecstypes.Deref(td.TaskRoleArn), ecstypes.Deref(td.ExecutionRoleArn)
	if ov != nil {
		if ov.TaskRoleArn != nil {
			task = *ov.TaskRoleArn
		}
		if ov.ExecutionRoleArn != nil {
			execution = *ov.ExecutionRoleArn
		}
	}
	return task, execution
}
