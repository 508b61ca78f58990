package test

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/regate/regate/test/testenv"
)

// TestLocalBundleReloadOnSIGHUP: a gateway serving policy.bundle reads it
// again on SIGHUP; the change applies to an open session, and a bundle that
// does not compile is refused with the old revision kept.
func TestLocalBundleReloadOnSIGHUP(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.Psql(t, "app", `CREATE TABLE public.orders (id int PRIMARY KEY); ALTER TABLE public.orders OWNER TO app;`)
	iss := testenv.StartIssuer(t)
	dir := policyDir(t, t.TempDir(), "local", policyV1)
	writeFile(t, dir, ".manifest", `{"revision": "h1"}`)
	gw := testenv.StartGateway(t, pg, testenv.GatewayOptions{Issuer: iss.URL(), Audience: audience, Bundle: dir})
	ctx, conn := connectPgxWithin(t, gw.Listen, iss.Token(t, "ops-bot", audience), time.Minute)
	mustExec(t, ctx, conn, "UPDATE orders SET id = id")

	writeFile(t, dir, "policy.rego", policyV2)
	writeFile(t, dir, ".manifest", `{"revision": "h2"}`)
	gw.Signal(t, syscall.SIGHUP)
	waitFor(t, func() bool { return strings.Contains(gw.Logs(), "policy bundle reloaded: bundle=local revision=h2") })
	mustBlock(t, ctx, conn, "UPDATE orders SET id = id", "UPDATE is frozen")

	writeFile(t, dir, "policy.rego", "package regate\n\ndecision := {\n")
	writeFile(t, dir, ".manifest", `{"revision": "h3"}`)
	gw.Signal(t, syscall.SIGHUP)
	waitFor(t, func() bool { return strings.Contains(gw.Logs(), "policy bundle not reloaded") })
	if !strings.Contains(gw.Logs(), "policy.rego:") {
		t.Errorf("the refusal does not name the file:\n%s", gw.Logs())
	}
	mustBlock(t, ctx, conn, "UPDATE orders SET id = id", "UPDATE is frozen")
	mustExec(t, ctx, conn, "SELECT 1")
}
