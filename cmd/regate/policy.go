package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/regate/regate/policies"
)

func cmdPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "test" {
		fmt.Fprintln(stderr, "Usage: regate policy test [PATH...] [-v]")
		return &exitError{code: 2, err: errors.New("policy: unknown or missing subcommand (available: test)")}
	}
	fs := newFlags("policy test", "policy test [PATH...] [-v]", stderr)
	verbose := fs.Bool("v", false, "print every test, not only failures")
	paths, err := parseArgs(fs, args[1:])
	if err != nil {
		return err
	}
	passed, failed, err := policies.Test(ctx, paths, stdout, *verbose)
	if err != nil {
		return fmt.Errorf("policy test: %w", err)
	}
	if failed > 0 {
		return &exitError{code: 1, err: fmt.Errorf("policy test: %d failed, %d passed", failed, passed)}
	}
	if passed == 0 {
		return &exitError{code: 1, err: errors.New("policy test: no tests found")}
	}
	return nil
}
