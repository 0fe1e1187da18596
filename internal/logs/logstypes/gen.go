// Package logstypes holds the CloudWatch Logs request and response shapes,
// generated from botocore's model so that they match what clients send.
package logstypes

//go:generate sh -c "go run ../../../tools/shapegen -model $(python3 -c 'import botocore,os;print(os.path.dirname(botocore.__file__))')/data/logs/2014-03-28/service-2.json.gz -pkg logstypes > types.go"
