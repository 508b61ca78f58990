package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/hashicorp/go-hclog"

	"github.com/regate/regate/cmd/regate/config"
	"github.com/regate/regate/policies"
	"github.com/regate/regate/recorder"
)

func cmdExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "decisions" {
		fmt.Fprintln(stderr, "Usage: regate export decisions [--since 24h] [--target NAME] [-o FILE] [--bundle B] [--config FILE | --store URL]")
		return &exitError{code: 2, err: errors.New("export: unknown or missing subcommand (available: decisions)")}
	}
	fs := newFlags("export decisions", "export decisions [--since 24h] [--until T] [--target NAME] [-o FILE] [--bundle B] [--config FILE | --store URL]", stderr)
	sf := addStoreFlags(fs, stderr)
	since := fs.String("since", "", "only decisions recorded since then: a duration back from now (24h) or an RFC 3339 time; all when empty")
	until := fs.String("until", "", "only decisions recorded before this RFC 3339 time")
	target := fs.String("target", "", "only this target's decisions")
	out := fs.String("o", "", "write to FILE instead of stdout")
	bundlePath := fs.String("bundle", "", "bundle whose data.system.log.mask/drop rules apply (default: the policy of --config, else the embedded library)")
	if _, err := parseArgs(fs, args[1:]); err != nil {
		return err
	}
	from, err := parseSince(*since)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	to, err := parseSince(*until)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	engine, err := exportEngine(ctx, *sf.config, *bundlePath, stderr)
	if err != nil {
		return err
	}
	defer engine.Close()
	store, err := sf.open(ctx)
	if err != nil {
		return err
	}
	defer store.Close()

	w, closeOut, err := createOutput(*out, stdout)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	dlog, err := engine.NewDecisionLog(bw)
	if err != nil {
		return errors.Join(err, closeOut())
	}
	var read, written int
	err = store.Commands(ctx, recorder.CommandFilter{Since: from, Until: to, Target: *target}, func(ev *recorder.Event) error {
		if ev.Decision == nil {
			return nil
		}
		read++
		n, err := dlog.Write(ctx, policies.Recorded{
			DecisionID: ev.Decision.ID, Path: ev.Decision.Path, Input: ev.Input, Result: ev.Decision.Result,
			Bundles: ev.Decision.Bundles, Time: ev.Time, Error: ev.Decision.Error,
		})
		written += n
		return err
	})
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	if cerr := closeOut(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("export decisions: %w", err)
	}
	fmt.Fprintf(stderr, "exported %d decisions", written)
	if read != written {
		fmt.Fprintf(stderr, " (%d dropped by data.system.log.drop)", read-written)
	}
	fmt.Fprintln(stderr)
	return nil
}

// exportEngine loads the policy whose decision-log rules (mask, drop) the
// export applies: --bundle, else the policy configured in --config (local
// bundle or OPA bundle service), else the embedded default library.
func exportEngine(ctx context.Context, cfgPath, bundlePath string, stderr io.Writer) (*policies.Engine, error) {
	pc := policies.Config{Bundle: bundlePath, ID: "regate", Unverified: true}
	if bundlePath == "" && cfgPath != "" {
		cfg, err := config.LoadForStore(cfgPath)
		if err != nil {
			return nil, err
		}
		log := newLogger(stderr, "warn", false)
		return newEngine(ctx, cfg, log)
	}
	pc.Logger = hclog.New(&hclog.LoggerOptions{Output: stderr, Level: hclog.Warn})
	e, err := policies.New(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("export decisions: %w", err)
	}
	return e, nil
}

// createOutput returns where a command writes: the file path (created or
// truncated) or, when path is "", stdout. closeOut closes the file (a no-op
// for stdout); the caller reports its error, which a failed final write can
// surface only there.
func createOutput(path string, stdout io.Writer) (w io.Writer, closeOut func() error, err error) {
	if path == "" {
		return stdout, func() error { return nil }, nil
	}
	fh, err := os.Create(path)
	if err != nil {
		return nil, nil, err
	}
	return fh, fh.Close, nil
}
