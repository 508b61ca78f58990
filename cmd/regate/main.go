// Command regate is the policy-as-code access gateway. Run `regate --help`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

const usage = `regate — policy-as-code access gateway (Open Policy Agent in the data path)

Usage:
  regate serve --config FILE            run the gateway
  regate dev [flags]                    run on the embedded default: a development OIDC issuer
                                        on loopback, SQLite in a temp dir, the default bundle
  regate token --sub NAME [--groups a,b] print a token the running 'regate dev' accepts
  regate sessions [--json]              list recorded sessions
  regate replay SESSION_ID [--json]     show a session's commands with decisions and outcomes
  regate verify                         check the hash chain of every recorded event
  regate approvals [--json]             list approval requests you made or may decide
  regate approve ID [--reason TEXT]     approve a pending request (admin API; --token or $REGATE_TOKEN)
  regate deny ID --reason TEXT          deny a pending request
  regate policy test [PATH...] [-v]     run Rego unit tests (the embedded library when no PATH)
  regate policy build PATH... -o B      build an OPA bundle (.tar.gz), optionally signed
  regate policy what-if --bundle B      re-decide recorded inputs with a candidate bundle; list changes
  regate policy fixture SESSION_ID      write a session's recorded inputs as a Rego test file
  regate export decisions [--since 24h] write recorded decisions as OPA decision-log events (NDJSON)
  regate version

Commands that read the store take --config FILE (uses store.url) or --store URL;
with neither they use the store of the running 'regate dev'.
Run 'regate COMMAND --help' for a command's flags.
`

// version is set with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	if os.Getenv("GOGC") == "" {
		// The data path allocates per statement (input documents, policy
		// evaluation); a larger heap target halves the GC's share of the CPU.
		debug.SetGCPercent(400)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// exitError carries a specific exit status.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmds := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"serve":     cmdServe,
		"dev":       cmdDev,
		"token":     cmdToken,
		"sessions":  cmdSessions,
		"replay":    cmdReplay,
		"verify":    cmdVerify,
		"policy":    cmdPolicy,
		"export":    cmdExport,
		"approvals": cmdApprovals,
		"approve":   cmdApprove,
		"deny":      cmdDeny,
		"version": func(context.Context, []string, io.Writer, io.Writer) error {
			fmt.Fprintln(stdout, "regate", version)
			return nil
		},
	}
	f, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "regate: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	err := f(ctx, args[1:], stdout, stderr)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintln(stderr, "regate:", err)
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

// newFlags returns a FlagSet that prints its usage to stderr.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: regate %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}
