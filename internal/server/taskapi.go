package server

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/iam"
	"github.com/gantry-dev/gantry/internal/metadata"
	"github.com/gantry-dev/gantry/internal/state"
)

// taskAPI is the AWS API where tasks reach it (metadata.Server.ListenAPI):
// opened before the agent starts, so that every container started gets
// AWS_ENDPOINT_URL, and served once the router exists (connections made
// meanwhile wait in the listen queue).
type taskAPI struct {
	ln  net.Listener
	srv *http.Server
}

func listenTaskAPI(md *metadata.Server, listen string, log *slog.Logger) *taskAPI {
	if md == nil {
		return &taskAPI{}
	}
	prefer := 0
	if _, p, err := net.SplitHostPort(listen); err == nil {
		prefer, _ = strconv.Atoi(p)
	}
	ln, err := md.ListenAPI(prefer)
	if err != nil {
		log.Warn("tasks cannot reach the AWS API: containers get no AWS_ENDPOINT_URL", "err", err)
		return &taskAPI{}
	}
	log.Info("AWS API for tasks", "endpoint", md.APIURL())
	return &taskAPI{ln: ln}
}

// serve answers tasks with the router alone: SigV4 on every request, and
// none of what sits beside it on the host's listener (/metrics, exec
// streams), which tasks have no business with.
func (a *taskAPI) serve(router http.Handler, log *slog.Logger) {
	if a.ln == nil {
		return
	}
	a.srv = &http.Server{Handler: router, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := a.srv.Serve(a.ln); err != nil && err != http.ErrServerClosed {
			log.Error("AWS API for tasks stopped", "err", err)
		}
	}()
}

func (a *taskAPI) close() {
	switch {
	case a.srv != nil:
		a.srv.Close()
	case a.ln != nil:
		a.ln.Close()
	}
}

// taskRoleCheck is RunTask's question to IAM: could ECS assume this role
// for this task? A refusal is ECS's ClientException.
func taskRoleCheck(ids *iam.Store) func(tx state.Tx, taskARN, roleARN string) error {
	return func(tx state.Tx, taskARN, roleARN string) error {
		err := ids.CheckTaskRole(tx, taskARN, roleARN)
		if errors.Is(err, iam.ErrCannotAssume) {
			return awsapi.ClientException("%s", err.Error())
		}
		return err
	}
}
