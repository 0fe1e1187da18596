package testenv

import (
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
)

// AWSConfig is an aws-sdk-go-v2 configuration for the server's local account.
func (s *Server) AWSConfig() aws.Config {
	return aws.Config{
		Region:       s.Creds.Region,
		Credentials:  credentials.NewStaticCredentialsProvider(s.Creds.AccessKeyID, s.Creds.SecretAccessKey, ""),
		BaseEndpoint: aws.String(s.Endpoint),
		// Tests and benchmarks want to see a failure, not hide it behind retries.
		RetryMaxAttempts: 1,
	}
}

// ECS is an aws-sdk-go-v2 ECS client for the server.
func (s *Server) ECS() *ecs.Client { return ecs.NewFromConfig(s.AWSConfig()) }
