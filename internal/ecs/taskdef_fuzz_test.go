package ecs

import (
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"testing"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
)

// FuzzRegisterTaskDefinition feeds arbitrary request bodies to the
// RegisterTaskDefinition validation. It must never panic; a refusal must be
// an AWS client error; an accepted definition must be Fargate-sized when it
// asked for Fargate, render, and be accepted again unchanged when registered
// as ECS returned it (clients copy describe output into register calls).
func FuzzRegisterTaskDefinition(f *testing.F) {
	f.Add([]byte(`{"family":"web","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"0.25 vCPU","memory":"0.5 GB","containerDefinitions":[{"name":"app","image":"nginx","portMappings":[{"containerPort":80}]}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var in ecstypes.RegisterTaskDefinitionRequest
		if json.Unmarshal(body, &in) != nil {
			return
		}
		td, err := newTaskDefinition(&in)
		if err != nil {
			var ae *awsapi.Error
			if !errors.As(err, &ae) || ae.Status < 400 || ae.Status > 499 || ae.Message == "" {
				t.Fatalf("refusal is not an AWS client error: %#v", err)
			}
			return
		}
		if slices.Contains(td.RequiresCompatibilities, "FARGATE") {
			cpu, _ := strconv.Atoi(ecstypes.Deref(td.Cpu))
			mem, _ := strconv.Atoi(ecstypes.Deref(td.Memory))
			if !fargateSizeValid(cpu, mem) || !slices.Contains(td.Compatibilities, "FARGATE") {
				t.Fatalf("accepted a Fargate definition of %d CPU, %d MiB (compatibilities %v)", cpu, mem, td.Compatibilities)
			}
		}
		first, err := json.Marshal(render(td))
		if err != nil {
			t.Fatalf("render: %v", err)
		}
		var again ecstypes.RegisterTaskDefinitionRequest
		if err := json.Unmarshal(first, &again); err != nil {
			t.Fatalf("decode rendered definition: %v", err)
		}
		td2, err := newTaskDefinition(&again)
		if err != nil {
			t.Fatalf("rendered definition refused on re-registration: %v\n%s", err, first)
		}
		second, _ := json.Marshal(render(td2))
		if string(first) != string(second) {
			t.Fatalf("re-registration changed the definition:\n%s\n%s", first, second)
		}
	})
}
