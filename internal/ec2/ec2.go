// Package ec2 serves the EC2 Query API's VPC read side (DescribeVpcs,
// DescribeSubnets, DescribeSecurityGroups) and keeps the default VPC that
// every account starts with.
package ec2

import (
	"context"
	"net/http"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/state"
)

// Service answers EC2 Query requests.
type Service struct {
	Store state.Store
}

// EnsureDefaultVPC creates the account's default VPC, subnets and security
// group in region if they do not exist yet.
func EnsureDefaultVPC(ctx context.Context, store state.Store, account, region string) error {
	return nil
}

func (s *Service) ServeQuery(w http.ResponseWriter, r *http.Request, form map[string][]string) {
	s.WriteError(w, awsapi.Errorf("InvalidAction", "not implemented"))
}

func (s *Service) WriteError(w http.ResponseWriter, e *awsapi.Error) {
	http.Error(w, e.Message, e.Status)
}
