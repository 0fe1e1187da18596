package main

import (
	"context"
	"errors"
)

func runImage(ctx context.Context, args []string) error {
	return errors.New("image: not implemented")
}
