package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/regate/regate/parse"
	"github.com/regate/regate/policies"
	"github.com/regate/regate/policies/decision"
	"github.com/regate/regate/recorder"
)

const policyUsage = `Usage:
  regate policy test [PATH...] [-v] [--coverage]
  regate policy build PATH... -o bundle.tar.gz [--revision REV] [--signing-key KEY [--signing-alg RS256] [--key-id ID]]
  regate policy what-if --bundle CANDIDATE [--since 24h] [--target NAME] [--json] [--allow-changes]
                        [--config FILE | --store URL | --decisions FILE.ndjson]
  regate policy fixture SESSION_ID [-o FILE] [--package NAME] [--config FILE | --store URL]
`

func cmdPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"test": cmdPolicyTest, "build": cmdPolicyBuild, "what-if": cmdPolicyWhatIf, "fixture": cmdPolicyFixture,
	}
	if len(args) == 0 || sub[args[0]] == nil {
		fmt.Fprint(stderr, policyUsage)
		return &exitError{code: 2, err: errors.New("policy: unknown or missing subcommand (available: test, build, what-if, fixture)")}
	}
	return sub[args[0]](ctx, args[1:], stdout, stderr)
}

func cmdPolicyTest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("policy test", "policy test [PATH...] [-v] [--coverage]", stderr)
	verbose := fs.Bool("v", false, "print every test, not only failures")
	coverage := fs.Bool("coverage", false, "print the coverage report (JSON, as opa test --coverage) instead of the results")
	paths, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	passed, failed, err := policies.Test(ctx, paths, stdout, policies.TestOptions{Verbose: *verbose, Coverage: *coverage})
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

func cmdPolicyBuild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("policy build", "policy build PATH... -o bundle.tar.gz [--revision REV] [--signing-key KEY]", stderr)
	out := fs.String("o", "bundle.tar.gz", "output file")
	rev := fs.String("revision", "", "revision written into the bundle's .manifest")
	key := fs.String("signing-key", "", "sign the bundle: a PEM private key (RS*, ES*, PS*) or an HMAC secret (HS*), or a file holding it")
	alg := fs.String("signing-alg", "RS256", "signing algorithm")
	keyID := fs.String("key-id", "default", "key id named in the signature (the gateway's policy.opa.keys entry)")
	claims := fs.String("claims-file", "", "extra claims for the signature (JSON file)")
	paths, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(paths) == 0 {
		fs.Usage()
		return &exitError{code: 2, err: errors.New("policy build: give the directories or files to bundle")}
	}
	tmp, err := os.CreateTemp(filepath.Dir(*out), ".regate-bundle-*")
	if err != nil {
		return fmt.Errorf("policy build: %w", err)
	}
	defer os.Remove(tmp.Name())
	err = policies.Build(ctx, policies.BuildOptions{
		Paths: paths, Revision: *rev, SigningKey: *key, SigningAlg: *alg, KeyID: *keyID, ClaimsFile: *claims,
	}, tmp)
	if cerr := tmp.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("policy build: %w", cerr)
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), *out); err != nil {
		return fmt.Errorf("policy build: %w", err)
	}
	signed := "unsigned"
	if *key != "" {
		signed = "signed (" + *alg + ", key id " + *keyID + ")"
	}
	fmt.Fprintf(stderr, "wrote %s: revision %q, %s\n", *out, *rev, signed)
	return nil
}

// parseSince accepts a duration back from now (24h, 90m) or an RFC 3339 time.
func parseSince(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("--since %s: negative duration", s)
		}
		return time.Now().Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since %q: neither a duration (24h) nor an RFC 3339 time (2026-11-26T10:00:00Z)", s)
	}
	return t, nil
}

// recordedDecision is a decision read back from the store or from an
// exported decision log, with what identifies the command it decided.
type recordedDecision struct {
	DecisionID string
	Time       time.Time
	SessionID  string
	Target     string
	Subject    string
	Input      json.RawMessage
	Decision   decision.Decision
}

// statement is the command text of a recorded input, for tables.
func (r recordedDecision) statement() string {
	var in parse.Input
	if err := json.Unmarshal(r.Input, &in); err != nil {
		return ""
	}
	if in.Postgres != nil {
		return in.Postgres.Query
	}
	text, _, summary := in.CommandText()
	if text != "" {
		return text
	}
	return summary
}

// readRecorded calls fn for every recorded decision selected by f, from the
// store or, when file is set, from an exported decision log (NDJSON of OPA
// decision-log events, "-" for stdin).
func readRecorded(ctx context.Context, sf storeFlags, file string, f recorder.CommandFilter, fn func(recordedDecision) error) error {
	if file != "" {
		return readDecisionLog(file, f, fn)
	}
	store, err := sf.open(ctx)
	if err != nil {
		return err
	}
	defer store.Close()
	return store.Commands(ctx, f, func(ev *recorder.Event) error {
		r := recordedDecision{
			Time: ev.Time, SessionID: ev.SessionID, Target: ev.Target, Subject: ev.Subject, Input: ev.Input,
		}
		if ev.Decision != nil {
			r.Decision = *ev.Decision
			r.DecisionID = ev.Decision.ID
		}
		return fn(r)
	})
}

// readDecisionLog reads OPA decision-log events, one JSON object per line.
func readDecisionLog(file string, f recorder.CommandFilter, fn func(recordedDecision) error) error {
	var r io.Reader = os.Stdin
	if file != "-" {
		fh, err := os.Open(file)
		if err != nil {
			return err
		}
		defer fh.Close()
		r = fh
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), 256<<20)
	line := 0
	for sc.Scan() {
		line++
		if len(strings.TrimSpace(sc.Text())) == 0 {
			continue
		}
		var ev struct {
			DecisionID string                     `json:"decision_id"`
			Path       string                     `json:"path"`
			Input      json.RawMessage            `json:"input"`
			Result     any                        `json:"result"`
			Bundles    map[string]decision.Bundle `json:"bundles"`
			Timestamp  time.Time                  `json:"timestamp"`
		}
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.UseNumber()
		if err := dec.Decode(&ev); err != nil {
			return fmt.Errorf("%s:%d: not a decision-log event: %w", file, line, err)
		}
		if len(ev.Input) == 0 {
			return fmt.Errorf("%s:%d: decision %s has no input (dropped or erased by data.system.log.mask?)", file, line, ev.DecisionID)
		}
		var in parse.Input
		if err := json.Unmarshal(ev.Input, &in); err != nil {
			return fmt.Errorf("%s:%d: input is not a regate input document: %w", file, line, err)
		}
		d := policies.Interpret(ev.Path, ev.Result)
		d.ID, d.Bundles = ev.DecisionID, ev.Bundles
		rec := recordedDecision{
			DecisionID: ev.DecisionID, Time: ev.Timestamp, SessionID: in.Session.ID, Target: in.Target.Name,
			Subject: in.Identity.Subject, Input: ev.Input, Decision: d,
		}
		probe := recorder.Event{Type: recorder.TypeCommand, Time: rec.Time, Target: rec.Target, SessionID: rec.SessionID}
		if !f.Match(&probe) {
			continue
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	return nil
}

// whatIfChange is one decision the candidate bundle changes.
type whatIfChange struct {
	DecisionID string                     `json:"decision_id"`
	Time       time.Time                  `json:"time"`
	SessionID  string                     `json:"session_id"`
	Target     string                     `json:"target"`
	Subject    string                     `json:"subject"`
	Statement  string                     `json:"statement"`
	Changes    []string                   `json:"changes"`
	Before     decisionSummary            `json:"before"`
	After      decisionSummary            `json:"after"`
	Revisions  map[string]decision.Bundle `json:"recorded_bundles,omitempty"`
}

type decisionSummary struct {
	Effect   string             `json:"effect"`
	Reasons  []string           `json:"reasons,omitempty"`
	Approval *decision.Approval `json:"approval,omitempty"`
	Mask     []decision.Mask    `json:"mask,omitempty"`
	Error    string             `json:"error,omitempty"`
}

func summarize(d decision.Decision) decisionSummary {
	return decisionSummary{Effect: d.Effect(), Reasons: d.Reasons, Approval: d.Approval, Mask: d.Mask, Error: d.Error}
}

type whatIfReport struct {
	Candidate map[string]decision.Bundle `json:"candidate"`
	Evaluated int                        `json:"evaluated"`
	Changed   int                        `json:"changed"`
	Counts    map[string]int             `json:"counts"`
	Changes   []whatIfChange             `json:"changes"`
}

func cmdPolicyWhatIf(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("policy what-if", "policy what-if --bundle CANDIDATE [--since 24h] [--target NAME] [--json] [--allow-changes] [--config FILE | --store URL | --decisions FILE]", stderr)
	sf := addStoreFlags(fs, stderr)
	candidate := fs.String("bundle", "", "candidate bundle: a directory or .tar.gz (required)")
	since := fs.String("since", "24h", "only decisions recorded since then: a duration back from now or an RFC 3339 time; \"\" for all")
	target := fs.String("target", "", "only this target's decisions")
	asJSON := fs.Bool("json", false, "print JSON")
	allow := fs.Bool("allow-changes", false, "exit 0 even when decisions change")
	file := fs.String("decisions", "", "read recorded decisions from an exported decision log (NDJSON, - for stdin) instead of the store")
	path := fs.String("decision", "", "decision path to evaluate (default: the path each decision was recorded with)")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	if *candidate == "" {
		fs.Usage()
		return &exitError{code: 2, err: errors.New("policy what-if: --bundle is required")}
	}
	from, err := parseSince(*since)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	engines := map[string]*policies.Engine{}
	engineFor := func(p string) (*policies.Engine, error) {
		if *path != "" {
			p = *path
		}
		if e := engines[p]; e != nil {
			return e, nil
		}
		e, err := policies.New(ctx, policies.Config{Bundle: *candidate, Decision: p, Unverified: true})
		if err != nil {
			return nil, fmt.Errorf("candidate bundle: %w", err)
		}
		engines[p] = e
		return e, nil
	}
	defer func() {
		for _, e := range engines {
			e.Close()
		}
	}()
	first, err := engineFor(policies.DefaultDecision)
	if err != nil {
		return err
	}
	report := whatIfReport{Candidate: first.Bundles(), Counts: map[string]int{}, Changes: []whatIfChange{}}
	err = readRecorded(ctx, sf, *file, recorder.CommandFilter{Since: from, Target: *target}, func(r recordedDecision) error {
		e, err := engineFor(r.Decision.Path)
		if err != nil {
			return err
		}
		after := e.DecideJSON(ctx, r.Input)
		report.Evaluated++
		changes := decision.Diff(r.Decision, after)
		if len(changes) == 0 {
			return nil
		}
		report.Changed++
		for _, c := range changes {
			report.Counts[strings.SplitN(c, ":", 2)[0]]++
		}
		report.Changes = append(report.Changes, whatIfChange{
			DecisionID: r.DecisionID, Time: r.Time, SessionID: r.SessionID, Target: r.Target, Subject: r.Subject,
			Statement: r.statement(), Changes: changes, Before: summarize(r.Decision), After: summarize(after),
			Revisions: r.Decision.Bundles,
		})
		return nil
	})
	if err != nil {
		return fmt.Errorf("policy what-if: %w", err)
	}
	if *asJSON {
		if err := writeJSON(stdout, report); err != nil {
			return err
		}
	} else {
		printWhatIf(stdout, report)
	}
	if report.Changed > 0 && !*allow {
		return &exitError{code: 1, err: fmt.Errorf("policy what-if: the candidate changes %d of %d decisions", report.Changed, report.Evaluated)}
	}
	return nil
}

func printWhatIf(w io.Writer, r whatIfReport) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tTARGET\tSUBJECT\tSESSION\tBEFORE\tAFTER\tCHANGE\tSTATEMENT")
	for _, c := range r.Changes {
		stmt := strings.Join(strings.Fields(c.Statement), " ")
		if len(stmt) > 60 {
			stmt = stmt[:57] + "..."
		}
		session := c.SessionID
		if len(session) > 8 {
			session = session[:8]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Time.Local().Format("2006-01-02 15:04:05"), c.Target,
			c.Subject, session, c.Before.Effect, c.After.Effect, strings.Join(c.Changes, "; "), stmt)
	}
	tw.Flush()
	fmt.Fprintf(w, "\n%d of %d recorded decisions change", r.Changed, r.Evaluated)
	if len(r.Counts) > 0 {
		var parts []string
		for _, k := range []string{decision.ChangeAllowToDeny, decision.ChangeDenyToAllow, decision.ChangeNewApproval,
			decision.ChangeApprovalDropped, decision.ChangeApprovalGroups, decision.ChangeNewMask, decision.ChangeMaskDropped} {
			if n := r.Counts[k]; n > 0 {
				parts = append(parts, fmt.Sprintf("%s %d", k, n))
			}
		}
		fmt.Fprintf(w, " (%s)", strings.Join(parts, ", "))
	}
	fmt.Fprintln(w)
}

var packageSafe = regexp.MustCompile(`[^a-z0-9_]`)

func cmdPolicyFixture(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("policy fixture", "policy fixture SESSION_ID [-o FILE] [--package NAME] [--config FILE | --store URL]", stderr)
	sf := addStoreFlags(fs, stderr)
	out := fs.String("o", "", "write to FILE (e.g. incident_test.rego) instead of stdout")
	pkg := fs.String("package", "", "Rego package (default fixtures.session_<first 8 characters of the id>)")
	path := fs.String("decision", policies.DefaultDecision, "decision path the tests query")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return &exitError{code: 2, err: errors.New("policy fixture: give one session id")}
	}
	store, id, err := sf.openSession(ctx, pos[0])
	if err != nil {
		return err
	}
	defer store.Close()
	var cmds []policies.FixtureCommand
	var target, subject string
	err = store.Commands(ctx, recorder.CommandFilter{SessionID: id}, func(ev *recorder.Event) error {
		target, subject = ev.Target, ev.Subject
		c := policies.FixtureCommand{Time: ev.Time.UTC().Format(time.RFC3339Nano), Input: ev.Input}
		if ev.Decision != nil {
			c.DecisionID, c.Decision = ev.Decision.ID, *ev.Decision
		}
		cmds = append(cmds, c)
		return nil
	})
	if err != nil {
		return err
	}
	if len(cmds) == 0 {
		return fmt.Errorf("policy fixture: session %s has no recorded commands", id)
	}
	if *pkg == "" {
		short := packageSafe.ReplaceAllString(strings.ToLower(id), "")
		if len(short) > 8 {
			short = short[:8]
		}
		*pkg = "fixtures.session_" + short
	}
	w, closeOut, err := createOutput(*out, stdout)
	if err != nil {
		return err
	}
	err = policies.WriteFixture(w, policies.FixtureOptions{
		Package: *pkg, Decision: *path, Commands: cmds,
		Comment: fmt.Sprintf("Recorded by regate: session %s (target %s, subject %s), %d commands.\n"+
			"Generated by `regate policy fixture`. Each test asserts the decision recorded at the time;\n"+
			"edit the expected \"recorded\" values to turn an incident into a regression test.", id, target, subject, len(cmds)),
	})
	if cerr := closeOut(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("policy fixture: %w", err)
	}
	if *out != "" {
		fmt.Fprintf(stderr, "wrote %d commands of session %s to %s\n", len(cmds), id, *out)
	}
	return nil
}
