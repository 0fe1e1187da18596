package ecs

import "github.com/gantry-dev/gantry/internal/awsapi"

func (s *Service) tagOps() map[string]awsapi.Handler {
	return map[string]awsapi.Handler{}
}
