package test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/regate/regate/test/testenv"
)

// TestStoreSurvivesKill kills regate (SIGKILL) while four pgx sessions run
// statements through it. Every statement a client got an answer for was
// recorded before it was forwarded: after the kill, the events still in the
// journal (not yet copied into the database) are recovered by the next
// reader, `regate verify` passes, and each answered statement has its command
// event; a new gateway on the same store continues the chain.
func TestStoreSurvivesKill(t *testing.T) {
	pg, iss, gw := setup(t)
	tok := iss.Token(t, "agent-kill", audience, "agents")
	var mu sync.Mutex
	answered := map[string]bool{}
	var wg sync.WaitGroup
	for w := range 4 {
		ctx, conn := connectPgxWithin(t, gw.Listen, tok, 20*time.Second)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5000 { // bounded; the kill ends it sooner
				v := fmt.Sprintf("kill-%d-%d", w, i)
				var got string
				if err := conn.QueryRow(ctx, "SELECT $1::text", pgx.QueryExecModeExec, v).Scan(&got); err != nil {
					return
				}
				mu.Lock()
				answered[v] = true
				mu.Unlock()
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	gw.Signal(t, syscall.SIGKILL)
	wg.Wait()
	if len(answered) < 10 {
		t.Fatalf("only %d statements were answered before the kill", len(answered))
	}
	// Under load the newest events are in the journal only (the copy into
	// the database runs a few milliseconds behind), so the recovery path
	// is exercised.
	journal := strings.TrimPrefix(gw.Store, "sqlite://") + ".journal"
	if fi, err := os.Stat(journal); err != nil || fi.Size() == 0 {
		t.Fatalf("journal after the kill: %v %v; want events in it", fi, err)
	}

	out, errOut, code := testenv.Run(t, "verify", "--store", gw.Store)
	if code != 0 || !strings.HasPrefix(out, "OK: ") {
		t.Fatalf("verify after the kill: %d %s %s", code, out, errOut)
	}
	if fi, err := os.Stat(journal); err != nil || fi.Size() != 0 {
		t.Errorf("journal after verify: %v %v; want it copied and emptied", fi, err)
	}
	rows, err := openStore(t, gw).Query(`SELECT json_extract(body, '$.input.postgres.params[0]') FROM events
		WHERE type = 'command' AND json_extract(body, '$.input.postgres.params[0]') LIKE 'kill-%'`)
	if err != nil {
		t.Fatal(err)
	}
	recorded := map[string]bool{}
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		recorded[v] = true
	}
	rows.Close()
	for v := range answered {
		if !recorded[v] {
			t.Errorf("statement %s was answered but has no command event", v)
		}
	}
	t.Logf("%d statements answered, %d command events recorded", len(answered), len(recorded))

	// A gateway started again on the same store appends after the recovered head.
	gw2 := testenv.StartGateway(t, pg, testenv.GatewayOptions{Issuer: iss.URL(), Audience: audience, Store: gw.Store})
	ctx, conn := connectPgx(t, gw2.Listen, tok)
	if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	conn.Close(context.Background())
	waitFor(t, func() bool { return strings.Contains(gw2.Logs(), "session ended") })
	gw2.Signal(t, os.Interrupt)
	waitFor(t, func() bool { return strings.Contains(gw2.Logs(), "event store closed") })
	out, errOut, code = testenv.Run(t, "verify", "--store", gw.Store)
	if code != 0 || !strings.HasPrefix(out, "OK: ") {
		t.Fatalf("verify after the second gateway: %d %s %s", code, out, errOut)
	}
}
