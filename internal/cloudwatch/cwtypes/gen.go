// Package cwtypes holds the CloudWatch (metrics) request and response shapes,
// generated from botocore's model so that they match what clients send.
package cwtypes

import "github.com/gantry-dev/gantry/internal/ecs/ecstypes"

//go:generate sh -c "go run ../../../tools/shapegen -model $(python3 -c 'import botocore,os;print(os.path.dirname(botocore.__file__))')/data/cloudwatch/2010-08-01/service-2.json.gz -pkg cwtypes > types.go"

// Time is a JSON timestamp (epoch seconds), the same wire form as ECS's.
type Time = ecstypes.Time
