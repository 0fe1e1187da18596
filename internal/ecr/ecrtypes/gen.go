// Package ecrtypes holds the ECR request and response shapes, generated
// from botocore's model so that they match what clients send.
package ecrtypes

import "github.com/gantry-dev/gantry/internal/ecs/ecstypes"

//go:generate sh -c "go run ../../../tools/shapegen -model $(python3 -c 'import botocore,os;print(os.path.dirname(botocore.__file__))')/data/ecr/2015-09-21/service-2.json.gz -pkg ecrtypes > types.go"

// Time is a JSON 1.1 timestamp (epoch seconds), the same wire form as ECS's.
type Time = ecstypes.Time
