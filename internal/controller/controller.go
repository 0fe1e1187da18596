// Package controller is the control plane's task lifecycle: it places tasks
// on agents, turns agent reports into ECS task states, and reconciles after
// restarts.
package controller

import (
	"context"
	"log/slog"

	"github.com/gantry-dev/gantry/internal/agent"
	"github.com/gantry-dev/gantry/internal/state"
)

// Controller drives tasks from RunTask to STOPPED.
type Controller struct {
	Store state.Store
	Agent agent.Agent // one host for now; placement picks among several later
	Log   *slog.Logger
}

// Start resumes work after a restart: it reconciles stored tasks with what
// the agent reports.
func (c *Controller) Start(ctx context.Context) error { return nil }

// Stop ends the controller's background work.
func (c *Controller) Stop() {}

// TaskChanged records an agent's report.
func (c *Controller) TaskChanged(ctx context.Context, st agent.TaskStatus) {}
