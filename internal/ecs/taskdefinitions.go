package ecs

import "github.com/gantry-dev/gantry/internal/awsapi"

func (s *Service) taskDefinitionOps() map[string]awsapi.Handler {
	return map[string]awsapi.Handler{}
}
