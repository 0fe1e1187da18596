package test

import (
	"testing"

	"github.com/gantry-dev/gantry/internal/testenv"
)

func TestSmoke(t *testing.T) {
	s := testenv.Start(t)
	code, msg := s.AWSError("ecs", "list-clusters")
	t.Log(code, msg)
}
