// Package aastypes holds the Application Auto Scaling request and response
// shapes, generated from botocore's model so that they match what clients send.
package aastypes

import "github.com/gantry-dev/gantry/internal/ecs/ecstypes"

//go:generate sh -c "go run ../../../tools/shapegen -model $(python3 -c 'import botocore,os;print(os.path.dirname(botocore.__file__))')/data/application-autoscaling/2016-02-06/service-2.json.gz -pkg aastypes > types.go"

// Time is a JSON 1.1 timestamp (epoch seconds), the same wire form as ECS's.
type Time = ecstypes.Time
