package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/regate/regate/cmd/regate/config"
	"github.com/regate/regate/recorder"
)

// storeFlags adds --config and --store and opens the store they name.
type storeFlags struct {
	config, store *string
	stderr        io.Writer
}

func addStoreFlags(fs *flag.FlagSet, stderr io.Writer) storeFlags {
	return storeFlags{
		config: fs.String("config", "", "configuration file whose store.url to read"),
		store:  fs.String("store", "", "store URL, e.g. sqlite://./regate.db"),
		stderr: stderr,
	}
}

func (sf storeFlags) open(ctx context.Context) (recorder.Store, error) {
	url := *sf.store
	if url == "" && *sf.config != "" {
		cfg, err := config.LoadForStore(*sf.config)
		if err != nil {
			return nil, err
		}
		url = cfg.Store.URL
	}
	if url == "" {
		st, err := readDevState()
		if err != nil {
			return nil, fmt.Errorf("no store given: pass --config FILE or --store URL (%w)", err)
		}
		url = st.Store
		fmt.Fprintf(sf.stderr, "(using the store of 'regate dev': %s)\n", url)
	}
	return recorder.OpenReadOnly(ctx, url, hclog.NewNullLogger())
}

func cmdSessions(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("sessions", "sessions [--json] [--since 24h] [--config FILE | --store URL]", stderr)
	sf := addStoreFlags(fs, stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	since := fs.Duration("since", 0, "only sessions started within this duration")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	store, err := sf.open(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	var f recorder.SessionFilter
	if *since > 0 {
		f.Since = time.Now().Add(-*since)
	}
	list, err := store.Sessions(ctx, f)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, list)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SESSION\tPROTOCOL\tTARGET\tSUBJECT\tSTART\tEND\tCOMMANDS\tALLOWED\tBLOCKED")
	for _, s := range list {
		end := "open"
		if s.End != nil {
			end = s.End.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\n", s.ID, s.Protocol, s.Target, s.Subject,
			s.Start.Local().Format(time.DateTime), end, s.Commands, s.Allowed, s.Blocked)
	}
	return tw.Flush()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func cmdVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("verify", "verify [--config FILE | --store URL]", stderr)
	sf := addStoreFlags(fs, stderr)
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	store, err := sf.open(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	res, err := store.Verify(ctx)
	if err != nil {
		return err
	}
	if !res.OK {
		bad := res.FirstBad
		return &exitError{code: 1, err: fmt.Errorf("verification FAILED after %d good events: event seq %d (id %s): %s",
			res.Events, bad.Seq, bad.ID, bad.Reason)}
	}
	fmt.Fprintf(stdout, "OK: %d events verified; chain head %s\n", res.Events, res.Head)
	return nil
}

func cmdReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("replay", "replay SESSION_ID [--json] [--config FILE | --store URL]", stderr)
	sf := addStoreFlags(fs, stderr)
	asJSON := fs.Bool("json", false, "print the events as JSON")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return &exitError{code: 2, err: errors.New("replay: exactly one SESSION_ID is required")}
	}
	store, id, err := sf.openSession(ctx, pos[0])
	if err != nil {
		return err
	}
	defer store.Close()
	events, err := store.Events(ctx, id)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, events)
	}
	return printReplay(stdout, events)
}

// openSession opens the store and resolves a session id or unique prefix.
func (sf storeFlags) openSession(ctx context.Context, prefix string) (recorder.Store, string, error) {
	store, err := sf.open(ctx)
	if err != nil {
		return nil, "", err
	}
	id, err := resolveSession(ctx, store, prefix)
	if err != nil {
		store.Close()
		return nil, "", err
	}
	return store, id, nil
}

// resolveSession accepts a full session id or a unique prefix of one.
func resolveSession(ctx context.Context, store recorder.Store, prefix string) (string, error) {
	list, err := store.Sessions(ctx, recorder.SessionFilter{})
	if err != nil {
		return "", err
	}
	var match []string
	for _, s := range list {
		if s.ID == prefix {
			return s.ID, nil
		}
		if strings.HasPrefix(s.ID, prefix) {
			match = append(match, s.ID)
		}
	}
	switch len(match) {
	case 0:
		return "", fmt.Errorf("no session %q in the store", prefix)
	case 1:
		return match[0], nil
	}
	return "", fmt.Errorf("%q matches %d sessions; give more of the id", prefix, len(match))
}
