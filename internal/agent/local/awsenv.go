package local

import (
	"strings"

	"github.com/gantry-dev/gantry/internal/metadata"
)

// awsEnv is what Fargate puts in every container for the AWS SDKs and CLI:
// the task's region (AWS_REGION and AWS_DEFAULT_REGION) and, Gantry's
// addition, AWS_ENDPOINT_URL naming where tasks reach Gantry's API
// (none without the endpoint), since the SDKs would otherwise call real AWS with
// the task role's credentials. A variable the container's own environment
// (or its secrets) sets is left to it.
func awsEnv(taskARN string, md *metadata.Server, own map[string]string) []string {
	apiURL := ""
	if md != nil {
		apiURL = md.APIURL()
	}
	var env []string
	add := func(k, v string) {
		if _, set := own[k]; !set && v != "" {
			env = append(env, k+"="+v)
		}
	}
	region := ""
	if p := strings.SplitN(taskARN, ":", 6); len(p) == 6 {
		region = p[3]
	}
	add("AWS_REGION", region)
	add("AWS_DEFAULT_REGION", region)
	add("AWS_ENDPOINT_URL", apiURL)
	return env
}
