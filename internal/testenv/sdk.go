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
		// The SDK's default retries stay on: they retry only throttling,
		// 5xx and broken connections (Go's transport closes a pooled
		// connection under a reader now and then, aws-sdk-go-v2 #2737), so
		// a 4xx a test expects still arrives at once, and a real server
		// fault still fails the test after the last attempt.
	}
}

// ECS is an aws-sdk-go-v2 ECS client for the server.
func (s *Server) ECS() *ecs.Client { return ecs.NewFromConfig(s.AWSConfig()) }
