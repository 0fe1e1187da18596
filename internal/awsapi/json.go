package awsapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
)

// Handler serves one operation of a JSON 1.1 service: body in, shape out.
type Handler func(ctx context.Context, body []byte) (any, error)

// Op adapts a typed operation to a Handler, decoding the request as the
// service's input shape. A body that does not fit the shape is a
// SerializationException, as AWS answers it.
func Op[In any, Out any](fn func(context.Context, *In) (*Out, error)) Handler {
	return func(ctx context.Context, body []byte) (any, error) {
		in := new(In)
		if len(bytes.TrimSpace(body)) > 0 {
			if err := json.Unmarshal(body, in); err != nil {
				return nil, serializationError(err)
			}
		}
		return fn(ctx, in)
	}
}

func serializationError(err error) *Error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return Errorf("SerializationException", "Unexpected value type in field '%s': expected %s, got %s", te.Field, te.Type, te.Value)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return Errorf("SerializationException", "Malformed JSON at offset %d", se.Offset)
	}
	return Errorf("SerializationException", "%s", strings.TrimPrefix(err.Error(), "json: "))
}

// JSONService is a JSON 1.1 service: an X-Amz-Target prefix and its operations.
type JSONService struct {
	TargetPrefix string
	Ops          map[string]Handler
	Log          *slog.Logger
}

// ServeJSON answers one verified request whose X-Amz-Target names op.
func (s *JSONService) ServeJSON(w http.ResponseWriter, r *http.Request, op string, body []byte) {
	h, ok := s.Ops[op]
	if !ok {
		WriteJSONError(w, Errorf("UnknownOperationException", "Operation %s is not supported by this endpoint.", op))
		return
	}
	out, err := Guard(func() (any, error) { return h(r.Context(), body) })
	if err != nil {
		e := AsError(err)
		if e.Status >= 500 && s.Log != nil {
			s.Log.Error("operation failed", "op", s.TargetPrefix+"."+op, "err", err)
		}
		WriteJSONError(w, e)
		return
	}
	b, err := json.Marshal(out)
	if err != nil {
		WriteJSONError(w, ServerError(err))
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Write(b)
}

// WriteJSONError writes e in the JSON 1.1 error format.
func WriteJSONError(w http.ResponseWriter, e *Error) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-ErrorType", e.Code)
	status := e.Status
	if status == 0 {
		status = http.StatusBadRequest
	}
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]string{"__type": e.Code, "message": e.Message})
	w.Write(b)
}
