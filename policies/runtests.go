package policies

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/cover"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"

	"github.com/regate/regate/bundles"
)

// TestOptions configures Test.
type TestOptions struct {
	// Verbose prints every test, with traces of failures.
	Verbose bool
	// Coverage prints OPA's coverage report (JSON, as `opa test --coverage`)
	// instead of the test results.
	Coverage bool
}

// Test runs the Rego unit tests (rules named test_*) found in paths, files
// and directories loaded the way `opa test` loads them, or in the embedded
// default library when paths is empty. It prints the results to w like
// `opa test` (every test when verbose, with traces of failures) and returns
// how many tests passed and failed (errors count as failures; skipped todo_
// tests count as neither). err is set only when the policies cannot be loaded
// or compiled; finding no tests at all is (0, 0, nil).
//
// As in Decide, builtin errors (a division by zero, a bad sprintf) fail the
// test instead of making the expression undefined.
func Test(ctx context.Context, paths []string, w io.Writer, opts TestOptions) (passed, failed int, err error) {
	verbose := opts.Verbose
	modules, store, err := loadTests(paths)
	if err != nil {
		return 0, 0, err
	}
	txn, err := store.NewTransaction(ctx, storage.WriteParams)
	if err != nil {
		return 0, 0, fmt.Errorf("policy tests: %w", err)
	}
	defer store.Abort(ctx, txn)

	var cov *cover.Cover
	runner := tester.NewRunner()
	if opts.Coverage {
		cov = cover.New()
		runner = runner.SetCoverageQueryTracer(cov)
	}
	ch, err := runner.
		SetStore(store).
		SetModules(modules).
		CapturePrintOutput(true).
		EnableTracing(verbose).
		RaiseBuiltinErrors(true).
		RunTests(ctx, txn)
	if err != nil {
		return 0, 0, fmt.Errorf("policy tests: %w", err)
	}
	results := collect(ch)
	for _, r := range results {
		switch {
		case r.Pass():
			passed++
		case r.Fail || r.Error != nil:
			failed++
		}
	}
	if cov != nil {
		// The reporter also returns an error for failed tests; those are
		// counted in failed, so only other errors are errors.
		if err := (tester.JSONCoverageReporter{Cover: cov, Modules: modules, Output: w}).Report(resultsChan(results)); err != nil && failed == 0 {
			return passed, failed, fmt.Errorf("policy tests: coverage report: %w", err)
		}
		return passed, failed, nil
	}
	if err := report(w, verbose, results); err != nil {
		return passed, failed, fmt.Errorf("policy tests: report: %w", err)
	}
	return passed, failed, nil
}

// loadTests loads the modules and data to test.
func loadTests(paths []string) (map[string]*ast.Module, storage.Store, error) {
	if len(paths) > 0 {
		modules, store, err := tester.Load(paths, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("policy tests: load %v: %w", paths, err)
		}
		return modules, store, nil
	}
	rev, err := defaultRevision()
	if err != nil {
		return nil, nil, err
	}
	b, err := bundles.LoadFS(Default(), rev)
	if err != nil {
		return nil, nil, fmt.Errorf("policy tests: default library: %w", err)
	}
	return b.ParsedModules(DefaultBundleName), inmem.NewFromObject(b.Data), nil
}

// collect drains the runner's results and orders them by file and line, as
// the runner delivers them in no particular order.
func collect(ch chan *tester.Result) []*tester.Result {
	var results []*tester.Result
	for r := range ch {
		results = append(results, r)
	}
	slices.SortFunc(results, func(a, b *tester.Result) int {
		return cmp.Or(
			cmp.Compare(location(a).File, location(b).File),
			cmp.Compare(location(a).Row, location(b).Row),
			cmp.Compare(a.Name, b.Name),
		)
	})
	return results
}

func location(r *tester.Result) ast.Location {
	if r.Location == nil {
		return ast.Location{}
	}
	return *r.Location
}

// report prints results with OPA's own reporter.
func report(w io.Writer, verbose bool, results []*tester.Result) error {
	return tester.PrettyReporter{Output: w, Verbose: verbose}.Report(resultsChan(results))
}

func resultsChan(results []*tester.Result) chan *tester.Result {
	ch := make(chan *tester.Result, len(results))
	for _, r := range results {
		ch <- r
	}
	close(ch)
	return ch
}
