package logs

import (
	"context"
	"errors"
	"fmt"

	"github.com/gantry-dev/gantry/internal/agent"
)

// Sink is the agents' LogSink on this store.
type Sink struct{ Store *Store }

var _ agent.LogSink = Sink{}

func (k Sink) OpenStream(ctx context.Context, req agent.OpenLogStream) error {
	sc := Scope{req.Account, req.Region}
	if req.CreateGroup {
		if err := k.Store.createGroup(ctx, sc, req.Group, "", "STANDARD", nil); err != nil && !errors.Is(err, errGroupExists) {
			return err
		}
	}
	err := k.Store.createStream(ctx, sc, req.Group, req.Stream)
	switch {
	case errors.Is(err, errGroupNotFound):
		return fmt.Errorf("ResourceNotFoundException: The specified log group does not exist. (log group %q)", req.Group)
	case errors.Is(err, errStreamExists):
		return nil
	}
	return err
}

func (k Sink) PutLogs(ctx context.Context, b agent.LogBatch) error {
	evs := make([]Event, len(b.Events))
	offs := make([]int64, len(b.Events))
	for i, e := range b.Events {
		evs[i] = Event{Timestamp: e.Timestamp, Message: e.Message}
		offs[i] = e.Offset
	}
	err := k.Store.putEvents(ctx, Scope{b.Account, b.Region}, b.Group, b.Stream, true, evs, offs)
	if errors.Is(err, errGroupNotFound) {
		return fmt.Errorf("%w (log group %q)", ErrLogGroupGone, b.Group)
	}
	return err
}

// ErrLogGroupGone: the group was deleted while a container wrote to it; the
// events cannot be stored, and retrying will not help.
var ErrLogGroupGone = agent.ErrLogGroupGone
