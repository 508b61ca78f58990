package test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	_ "modernc.org/sqlite"

	"github.com/regate/regate/test/testenv"
)

const audience = "regate-e2e"

// setup starts PostgreSQL with a small schema, an issuer and a gateway on the
// embedded default policy library.
// psqlAs returns a function that runs SQL through gw with psql as subject
// (token tok) on database app, one -c per statement, in one session.
func psqlAs(t *testing.T, gw *testenv.Gateway, subject, tok string) func(sqls ...string) testenv.PsqlResult {
	return func(sqls ...string) testenv.PsqlResult {
		return testenv.PsqlVia(t, gw.Listen, subject, "app", tok, sqls)
	}
}

func setup(t *testing.T) (*testenv.Postgres, *testenv.Issuer, *testenv.Gateway) {
	pg := testenv.StartPostgres(t)
	pg.Psql(t, "app", `
		CREATE TABLE public.customers (id int PRIMARY KEY, email text NOT NULL, name text NOT NULL);
		INSERT INTO public.customers VALUES (1, 'ann@example.com', 'Ann'), (2, 'bob@example.com', 'Bob'), (3, 'cy@example.com', 'Cy');
		ALTER TABLE public.customers OWNER TO app;`)
	iss := testenv.StartIssuer(t)
	gw := testenv.StartGateway(t, pg, testenv.GatewayOptions{Issuer: iss.URL(), Audience: audience})
	return pg, iss, gw
}

func TestPostgresThroughPsql(t *testing.T) {
	pg, iss, gw := setup(t)
	tok := iss.Token(t, "agent-7", audience, "agents")
	psql := func(sqls ...string) testenv.PsqlResult {
		return testenv.PsqlVia(t, gw.Listen, "agent-7", "app", tok, sqls)
	}

	t.Run("select returns rows", func(t *testing.T) {
		r := psql("SELECT name FROM public.customers ORDER BY id")
		if r.Code != 0 || r.Out != "Ann\nBob\nCy" {
			t.Fatalf("got code %d out %q err %q", r.Code, r.Out, r.Err)
		}
	})
	t.Run("drop is blocked and the session stays usable", func(t *testing.T) {
		r := psql("DROP TABLE public.customers", "SELECT 40 + 2")
		if !strings.Contains(r.Err, "42501") || !strings.Contains(r.Err, "regate: blocked by policy:") ||
			!strings.Contains(r.Err, "DROP") || !strings.Contains(r.Err, "decision_id: ") {
			t.Fatalf("refusal not as documented: %q", r.Err)
		}
		if r.Out != "42" {
			t.Fatalf("session not usable after the refusal: out %q", r.Out)
		}
		if got := pg.Psql(t, "app", "SELECT count(*) FROM public.customers"); got != "3" {
			t.Fatalf("table changed: %s rows", got)
		}
	})
	t.Run("delete needs a where clause", func(t *testing.T) {
		r := psql("DELETE FROM customers")
		if !strings.Contains(r.Err, "42501") {
			t.Fatalf("DELETE without WHERE not blocked: %q", r.Err)
		}
		r = psql("DELETE FROM customers WHERE id = 3")
		if r.Code != 0 || pg.Psql(t, "app", "SELECT count(*) FROM customers") != "2" {
			t.Fatalf("DELETE with WHERE: code %d err %q", r.Code, r.Err)
		}
	})
	t.Run("one bad statement blocks the whole message", func(t *testing.T) {
		r := psql("INSERT INTO customers VALUES (10, 'x@example.com', 'X'); TRUNCATE customers")
		if !strings.Contains(r.Err, "42501") || !strings.Contains(r.Err, "TRUNCATE") {
			t.Fatalf("multi-statement not blocked: %q", r.Err)
		}
		if got := pg.Psql(t, "app", "SELECT count(*) FROM customers WHERE id = 10"); got != "0" {
			t.Fatalf("the allowed half was applied")
		}
	})
	t.Run("unparsable SQL is refused", func(t *testing.T) {
		r := psql("SELEC 1")
		if !strings.Contains(r.Err, "cannot parse SQL") || !strings.Contains(r.Err, "42601") {
			t.Fatalf("got %q", r.Err)
		}
	})
	t.Run("a refusal fails an open transaction as postgres would", func(t *testing.T) {
		r := psql("BEGIN", "INSERT INTO customers VALUES (11, 'y@example.com', 'Y')", "DROP TABLE customers",
			"SELECT 1", "ROLLBACK")
		if !strings.Contains(r.Err, "42501") || !strings.Contains(r.Err, "25P02") {
			t.Fatalf("expected the refusal then 'current transaction is aborted': %q", r.Err)
		}
		if got := pg.Psql(t, "app", "SELECT count(*) FROM customers WHERE id = 11"); got != "0" {
			t.Fatalf("the aborted transaction's insert is visible")
		}
	})
	t.Run("server file functions and copy program are blocked", func(t *testing.T) {
		for _, q := range []string{"SELECT pg_read_file('/etc/hostname')", "COPY customers TO PROGRAM 'cat'",
			"ALTER SYSTEM SET work_mem = '1MB'", "CREATE ROLE evil", "GRANT ALL ON customers TO PUBLIC",
			"UPDATE customers SET name = 'z'", "DROP DATABASE app", "DROP SCHEMA public CASCADE"} {
			if r := psql(q); !strings.Contains(r.Err, "42501") {
				t.Errorf("%s: not blocked: out %q err %q", q, r.Out, r.Err)
			}
		}
		if r := psql("UPDATE customers SET name = 'Ann B' WHERE id = 1", "COPY customers TO STDOUT"); r.Code != 0 {
			t.Errorf("safe neighbours blocked: %q", r.Err)
		}
	})
	t.Run("bad tokens are refused with 28P01", func(t *testing.T) {
		expired := iss.Claims("agent-7", audience)
		expired["exp"] = time.Now().Add(-time.Hour).Unix()
		expired["iat"] = time.Now().Add(-2 * time.Hour).Unix()
		expired["nbf"] = time.Now().Add(-2 * time.Hour).Unix()
		cases := map[string]struct{ token, want string }{
			"expired":        {iss.Sign(t, expired), "expired"},
			"wrong audience": {iss.Token(t, "agent-7", "someone-else"), "audience"},
			"forged":         {iss.Forge(t, iss.Claims("agent-7", audience)), "signature"},
			"garbage":        {"not-a-token", "token"},
			"alg none":       {algNone(iss.Claims("agent-7", audience)), "token"},
		}
		for name, c := range cases {
			t.Run(name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				conn, err := pgconn.Connect(ctx, connString(gw.Listen, c.token))
				if err == nil {
					conn.Close(ctx)
					t.Fatal("connected with a bad token")
				}
				var pe *pgconn.PgError
				if !errors.As(err, &pe) || pe.Code != "28P01" || !strings.Contains(pe.Message, c.want) {
					t.Fatalf("got %v, want 28P01 mentioning %q", err, c.want)
				}
				if strings.Contains(gw.Logs(), c.token) {
					t.Fatal("the token appears in regate's logs")
				}
			})
		}
		if n := countEvents(t, gw, "auth_failure", len(cases)); n < len(cases) {
			t.Fatalf("%d auth_failure events recorded, want >= %d", n, len(cases))
		}
	})
}

func TestPostgresThroughPgx(t *testing.T) {
	pg, iss, gw := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	token := iss.Token(t, "agent-9", audience, "agents")
	modes := map[string]pgx.QueryExecMode{
		"simple":          pgx.QueryExecModeSimpleProtocol,
		"extended":        pgx.QueryExecModeExec,
		"cache statement": pgx.QueryExecModeCacheStatement,
		"describe exec":   pgx.QueryExecModeDescribeExec,
	}
	for name, mode := range modes {
		t.Run(name, func(t *testing.T) {
			cfg, err := pgx.ParseConfig(connString(gw.Listen, token))
			if err != nil {
				t.Fatal(err)
			}
			cfg.DefaultQueryExecMode = mode
			conn, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var n int
			if err := conn.QueryRow(ctx, "SELECT count(*) FROM customers WHERE id > $1", 1).Scan(&n); err != nil || n != 2 {
				t.Fatalf("count = %d, %v", n, err)
			}
			_, err = conn.Exec(ctx, "DELETE FROM customers WHERE id > $1", 1000)
			_, err2 := conn.Exec(ctx, "DROP TABLE customers")
			for _, err := range []error{err2} {
				var pe *pgconn.PgError
				if !errors.As(err, &pe) || pe.Code != "42501" || !strings.HasPrefix(pe.Message, "regate: blocked by policy: ") ||
					!strings.HasPrefix(pe.Detail, "decision_id: ") {
					t.Fatalf("DROP: %v", err)
				}
			}
			if err != nil {
				t.Fatalf("DELETE with WHERE (matching nothing): %v", err)
			}
			// A refusal inside a transaction fails it, as Postgres would.
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO customers VALUES ($1, $2, $3)", 50, "t@example.com", "T"); err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "TRUNCATE customers"); err == nil {
				t.Fatal("TRUNCATE allowed")
			}
			var pe *pgconn.PgError
			if _, err := tx.Exec(ctx, "SELECT 1"); !errors.As(err, &pe) || pe.Code != "25P02" {
				t.Fatalf("after a refusal the transaction must be aborted: %v", err)
			}
			_ = tx.Rollback(ctx)
			var name string
			if err := conn.QueryRow(ctx, "SELECT name FROM customers WHERE id = $1", 1).Scan(&name); err != nil || name != "Ann" {
				t.Fatalf("connection unusable after the refusal: %q %v", name, err)
			}
		})
	}
	if got := pg.Psql(t, "app", "SELECT count(*) FROM customers"); got != "3" {
		t.Fatalf("table changed: %s", got)
	}
}

// connectPgx connects pgx through regate with token; the connection closes
// when the test ends.
func connectPgx(t *testing.T, addr, token string) (context.Context, *pgx.Conn) {
	t.Helper()
	return connectPgxWithin(t, addr, token, 30*time.Second)
}

// connectPgxWithin connects pgx through regate; the returned context (for
// the connection and its queries) ends after d. The connection is closed
// when the test ends.
func connectPgxWithin(t *testing.T, addr, token string, d time.Duration) (context.Context, *pgx.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	conn, err := pgx.Connect(ctx, connString(addr, token))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return ctx, conn
}

func connString(addr, token string) string {
	host, port, _ := strings.Cut(addr, ":")
	return "host=" + host + " port=" + port + " user=app dbname=app sslmode=disable connect_timeout=10 password=" + token
}

func algNone(c map[string]any) string {
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return b64(b)
	}
	return enc(map[string]string{"alg": "none", "typ": "JWT"}) + "." + enc(c) + "."
}

func countEvents(t *testing.T, gw *testenv.Gateway, typ string, atLeast int) int {
	t.Helper()
	return countWhere(t, gw, atLeast, "type = ?", typ)
}

// countWhere counts the events the condition selects, waiting up to 10 s for
// at least atLeast of them: regate copies events from its journal into the
// database within milliseconds, so a reader in another process may see the
// newest ones a moment late.
func countWhere(t *testing.T, gw *testenv.Gateway, atLeast int, cond string, args ...any) int {
	t.Helper()
	db := openStore(t, gw)
	var n int
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := db.QueryRow("SELECT count(*) FROM events WHERE "+cond, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n >= atLeast || time.Now().After(deadline) {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func openStore(t *testing.T, gw *testenv.Gateway) *sql.DB {
	t.Helper()
	path := strings.TrimPrefix(gw.Store, "sqlite://")
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+filepath.ToSlash(path)+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestPostgresClientUser: the user name in the startup message must be the
// target's account or the client's own identity (subject, email), as
// PostgreSQL refuses a role it does not know (pgx's TestConnectInvalidUser
// expects 28000 or 28P01); client_users widens that, "*" to any name.
func TestPostgresClientUser(t *testing.T) {
	pg, iss, gw := setup(t)
	tok := iss.Token(t, "agent-u", audience, "agents")
	connectAs := func(gw *testenv.Gateway, user string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cs := strings.Replace(connString(gw.Listen, tok), "user=app ", "user="+user+" ", 1)
		conn, err := pgconn.Connect(ctx, cs)
		if err == nil {
			err = conn.Exec(ctx, "SELECT 1").Close()
			conn.Close(ctx)
		}
		return err
	}
	for _, user := range []string{"app", "agent-u", "agent-u@example.com"} {
		if err := connectAs(gw, user); err != nil {
			t.Errorf("user %s: %v", user, err)
		}
	}
	err := connectAs(gw, "pgxinvalidusertest")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "28000" || !strings.Contains(pe.Message, `user "pgxinvalidusertest" is not accepted`) ||
		!strings.Contains(pe.Message, `"app"`) || !strings.Contains(pe.Message, `"agent-u"`) {
		t.Fatalf("unknown user: %v, want 28000 naming the user and the accepted names", err)
	}
	if n := countWhere(t, gw, 1, `type = 'auth_failure' AND subject = 'agent-u' AND body LIKE '%pgxinvalidusertest%'`); n != 1 {
		t.Errorf("%d auth_failure events for the unknown user, want 1", n)
	}

	open := testenv.StartGateway(t, pg, testenv.GatewayOptions{Issuer: iss.URL(), Audience: audience,
		Extra: "    client_users: [\"*\"]\n"})
	if err := connectAs(open, "anyone"); err != nil {
		t.Errorf("client_users [*]: %v", err)
	}
}
