package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/regate/regate/cmd/regate/config"
	"github.com/regate/regate/proxy/approval"
)

// adminFlags adds --addr, --config and --token for the admin API commands.
type adminFlags struct {
	addr, config, token *string
}

func addAdminFlags(fs *flag.FlagSet) adminFlags {
	return adminFlags{
		addr:   fs.String("addr", "", "admin API URL (default: admin.listen of --config, the running 'regate dev', else http://127.0.0.1:8080)"),
		config: fs.String("config", "", "configuration file whose admin.listen to use"),
		token:  fs.String("token", "", "your OIDC token (default: $REGATE_TOKEN)"),
	}
}

func (af adminFlags) base() (string, error) {
	switch {
	case *af.addr != "":
		return strings.TrimSuffix(*af.addr, "/"), nil
	case *af.config != "":
		cfg, err := config.LoadForStore(*af.config)
		if err != nil {
			return "", err
		}
		if cfg.Admin.Listen == "" {
			return "", fmt.Errorf("%s has no admin.listen", *af.config)
		}
		return "http://" + cfg.Admin.Listen, nil
	}
	if st, err := readDevState(); err == nil && st.Admin != "" {
		return "http://" + st.Admin, nil
	}
	return "http://127.0.0.1:8080", nil
}

// call sends one admin API request and decodes the JSON answer into out.
func (af adminFlags) call(ctx context.Context, method, path string, body, out any) error {
	base, err := af.base()
	if err != nil {
		return err
	}
	tok := *af.token
	if tok == "" {
		tok = os.Getenv("REGATE_TOKEN")
	}
	if tok == "" {
		return errors.New("no token: pass --token or set REGATE_TOKEN to your OIDC token")
	}
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(tok))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("admin API at %s: %w", base, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if resp.StatusCode/100 != 2 {
		var e struct{ Error string }
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s (HTTP %d)", e.Error, resp.StatusCode)
		}
		return fmt.Errorf("admin API answered HTTP %d", resp.StatusCode)
	}
	return json.Unmarshal(data, out)
}

func cmdApprovals(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("approvals", "approvals [--json] [--state pending|approved|denied|expired|all]", stderr)
	af := addAdminFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	state := fs.String("state", "pending", "which requests to list")
	if _, err := parseArgs(fs, args); err != nil {
		return err
	}
	var list []approval.Request
	if err := af.call(ctx, http.MethodGet, "/v1/approvals?state="+url.QueryEscape(*state), nil, &list); err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(stdout, list)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tREQUESTER\tTARGET\tAPPROVERS\tCREATED\tEXPIRES\tCOMMAND")
	for _, r := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.State, r.Requester.Subject, r.Target,
			strings.Join(r.Groups, ","), r.CreatedAt.Local().Format(time.DateTime),
			r.ExpiresAt.Local().Format(time.DateTime), oneLine(r.Command))
	}
	return tw.Flush()
}

func cmdApprove(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return decideCmd(ctx, "approve", args, stdout, stderr)
}

func cmdDeny(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return decideCmd(ctx, "deny", args, stdout, stderr)
}

func decideCmd(ctx context.Context, verb string, args []string, stdout, stderr io.Writer) error {
	synopsis := verb + " ID [--reason TEXT]"
	if verb == "deny" {
		synopsis = "deny ID --reason TEXT"
	}
	fs := newFlags(verb, synopsis, stderr)
	af := addAdminFlags(fs)
	reason := fs.String("reason", "", "why (required to deny)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return &exitError{code: 2, err: fmt.Errorf("%s: exactly one approval ID is required", verb)}
	}
	if verb == "deny" && strings.TrimSpace(*reason) == "" {
		return &exitError{code: 2, err: errors.New("deny: --reason is required")}
	}
	var r approval.Request
	path := "/v1/approvals/" + url.PathEscape(pos[0]) + "/" + verb
	if err := af.call(ctx, http.MethodPost, path, map[string]string{"reason": *reason}, &r); err != nil {
		return fmt.Errorf("%s %s: %w", verb, pos[0], err)
	}
	fmt.Fprintf(stdout, "%s %s: %s on %s by %s\n", r.ID, r.State, oneLine(r.Command), r.Target, r.Requester.Subject)
	return nil
}
