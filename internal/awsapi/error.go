// Package awsapi holds what every AWS-compatible endpoint of Gantry shares:
// SigV4 verification, the JSON 1.1 and Query wire protocols, and AWS-style
// errors.
package awsapi

import (
	"errors"
	"fmt"
	"net/http"
)

// Error is an AWS error: Code becomes `__type` (JSON) or <Code> (Query).
type Error struct {
	Code    string
	Message string
	Status  int
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf builds a client error (HTTP 400) with the given AWS code.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Status: http.StatusBadRequest}
}

// Common ECS-family error constructors.
func ClientException(format string, args ...any) *Error {
	return Errorf("ClientException", format, args...)
}

func InvalidParameter(format string, args ...any) *Error {
	return Errorf("InvalidParameterException", format, args...)
}

// ServerError is reserved for real server faults: clients retry it.
func ServerError(err error) *Error {
	return &Error{Code: "ServerException", Message: err.Error(), Status: http.StatusInternalServerError}
}

// AsError turns any error into an *Error; unknown errors are server faults.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return ServerError(err)
}

// Guard runs a handler, turning a panic into a server error: a bug then
// answers 500 with a message instead of dropping the connection, which
// clients would retry.
func Guard[T any](fn func() (T, error)) (out T, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = ServerError(fmt.Errorf("internal error: %v", p))
		}
	}()
	return fn()
}
