package test

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/regate/regate/test/testenv"
)

// COPY … TO STDOUT under column masks: described by the session (simple
// protocol) or planned from the catalog (extended protocol, other statements).

// TestCopyMaskedTableResolution: a COPY of a table under column masks is
// masked by the columns of the table the target reads. Alone in a simple
// Query, regate describes the table on the session's connection first, which
// sees what the session sees (transaction, search_path, temporary tables). In
// the extended protocol or next to other statements it looks the table up on
// a connection of its own, which does not: there it refuses, before anything
// runs, when it cannot be sure which table the COPY reads.
func TestCopyMaskedTableResolution(t *testing.T) {
	pg, iss, gw := setup(t)
	tok := iss.Token(t, "agent-q", audience, "agents")
	psql := psqlAs(t, gw, "agent-q", tok)
	noLeak := func(t *testing.T, what string, r testenv.PsqlResult, secrets ...string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(r.Out+r.Err, s) {
				t.Errorf("%s leaks %q: out %q err %q", what, s, r.Out, r.Err)
			}
		}
	}
	const rows = "1\ta***@example.com\tAnn\n2\tb***@example.com\tBob\n3\tc***@example.com\tCy"
	// Simple protocol: in a transaction block too, and a column added in
	// it counts.
	r := psql("BEGIN", "COPY customers TO STDOUT", "COMMIT")
	if r.Code != 0 || r.Out != "BEGIN\n"+rows+"\nCOMMIT" {
		t.Errorf("unqualified COPY in a transaction: code %d out %q err %q", r.Code, r.Out, r.Err)
	}
	r = psql("BEGIN", "ALTER TABLE public.customers ADD COLUMN extra text DEFAULT 'x'",
		"COPY customers (extra, email) TO STDOUT WITH (FORMAT csv)", "COPY customers TO STDOUT", "ROLLBACK")
	if r.Code != 0 || !strings.HasPrefix(r.Out, "BEGIN\nALTER TABLE\nx,a***@example.com\nx,b***@example.com\n") ||
		!strings.Contains(r.Out, "\n1\ta***@example.com\tAnn\tx\n") {
		t.Errorf("COPY of a table altered in the transaction: code %d out %q err %q", r.Code, r.Out, r.Err)
	}
	noLeak(t, "COPY of a table altered in the transaction", r, "ann@example.com")
	// Generated columns are not in COPY's output (those computed from a
	// masked column: TestGeneratedColumnsMasked).
	pg.Psql(t, "app", `CREATE TABLE public.g (id int, email text, up text GENERATED ALWAYS AS (upper(name)) STORED, name text);
		INSERT INTO public.g (id, email, name) VALUES (1, 'gen@example.com', 'Gen');
		ALTER TABLE public.g OWNER TO app;`)
	r = psql("COPY g TO STDOUT", "SELECT 1; COPY public.g TO STDOUT")
	if r.Code != 0 || r.Out != "1\tg***@example.com\tGen\n1\n1\tg***@example.com\tGen" {
		t.Errorf("COPY of a table with a generated column: code %d out %q err %q", r.Code, r.Out, r.Err)
	}
	// A second table of the same name, email in another position, that
	// the session's search_path picks; a temporary table that shadows.
	pg.Psql(t, "app", `CREATE SCHEMA other AUTHORIZATION app;
		CREATE TABLE other.customers (email text, id int, name text);
		INSERT INTO other.customers VALUES ('zoe@example.com', 9, 'Zoe');
		ALTER TABLE other.customers OWNER TO app;`)
	r = psql("SET search_path = other, public", "COPY customers TO STDOUT")
	if r.Code != 0 || r.Out != "SET\nz***@example.com\t9\tZoe" {
		t.Errorf("COPY of a name the search_path resolves: code %d out %q err %q", r.Code, r.Out, r.Err)
	}
	r = psql("CREATE TEMP TABLE customers (email text, id int)",
		"INSERT INTO customers VALUES ('tmp@example.com', 1)", "COPY customers TO STDOUT")
	if r.Code != 0 || r.Out != "CREATE TABLE\nINSERT 0 1\nt***@example.com\t1" {
		t.Errorf("COPY of a name a temporary table shadows: code %d out %q err %q", r.Code, r.Out, r.Err)
	}
	noLeak(t, "COPY of a temporary table", r, "tmp@example.com")

	// Next to other statements: the catalog's rules. An unqualified name
	// is refused, a name that two schemas hold too.
	const qualify = "qualify it with its schema"
	r = psql("SELECT 1; COPY customers TO STDOUT")
	if !strings.Contains(r.Err, "42501") || !strings.Contains(r.Err, qualify) {
		t.Errorf("unqualified COPY next to another statement: out %q err %q, want a refusal", r.Out, r.Err)
	}
	r = psql("SELECT 1; COPY other.customers TO STDOUT")
	if r.Code != 0 || r.Out != "1\nz***@example.com\t9\tZoe" {
		t.Errorf("COPY other.customers next to another statement: code %d out %q err %q", r.Code, r.Out, r.Err)
	}
	noLeak(t, "COPY other.customers", r, "zoe@example.com")

	// The extended protocol: Parse and Bind in flight run nothing, so an
	// unqualified COPY outside a transaction resolves there...
	w := login(t, gw.Listen, tok)
	pg.Psql(t, "app", `DROP SCHEMA other CASCADE`)
	data := extendedCopy(t, w, "COPY customers (id, email) TO STDOUT")
	if len(data) != 3 || !strings.HasPrefix(data[0], "1\t") {
		t.Errorf("extended COPY: rows %q, want 3", data)
	}
	for _, row := range data {
		if !strings.Contains(row, "***@example.com") {
			t.Errorf("extended COPY: row %q, want the email masked", row)
		}
	}
	noLeak(t, "extended COPY", testenv.PsqlResult{Out: strings.Join(data, "")}, "ann@example.com", "bob@example.com")
	// ... but not inside a transaction block.
	w.simpleQuery(t, "BEGIN")
	if _, e := extendedCopyResult(t, w, "COPY customers TO STDOUT"); e == nil || e.Code != "42501" || !strings.Contains(e.Message, qualify) {
		t.Errorf("extended unqualified COPY in a transaction: %+v, want a refusal", e)
	}
	w.simpleQuery(t, "ROLLBACK")
	// The catalog sees committed columns only: a column added in the same
	// transaction makes the rows differ from the plan, and the session
	// ends (the client is told why and disconnected, it does not hang).
	w.simpleQuery(t, "BEGIN")
	w.simpleQuery(t, "ALTER TABLE public.customers ADD COLUMN extra text")
	for _, m := range []pgproto3.FrontendMessage{&pgproto3.Parse{Query: "COPY public.customers TO STDOUT"},
		&pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}} {
		w.fe.Send(m)
	}
	if err := w.fe.Flush(); err != nil {
		t.Fatal(err)
	}
	w.expectFatal(t, "42501", "has 4 fields, expected 3")
}

// extendedCopyResult runs a COPY … TO STDOUT with Parse, Bind, Execute and
// Sync and returns its CopyData rows, or the error it got.
func extendedCopyResult(t *testing.T, w *wire, query string) ([]string, *pgproto3.ErrorResponse) {
	t.Helper()
	for _, m := range []pgproto3.FrontendMessage{&pgproto3.Parse{Query: query},
		&pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}} {
		w.fe.Send(m)
	}
	if err := w.fe.Flush(); err != nil {
		t.Fatal(err)
	}
	var data []string
	var e *pgproto3.ErrorResponse
	for {
		switch m := w.receive(t).(type) {
		case *pgproto3.CopyData:
			data = append(data, string(m.Data))
		case *pgproto3.ErrorResponse:
			e = m
		case *pgproto3.ReadyForQuery:
			return data, e
		}
	}
}

// TestCopyQueryMasked: COPY (SELECT … FROM table) names no columns either;
// when it selects from one table, regate plans its output from the table's
// columns (as for COPY table) and masks it; other shapes that would return a
// masked column stay refused (TestDefaultColumnMasks).
func TestCopyQueryMasked(t *testing.T) {
	_, iss, gw := setup(t)
	tok := iss.Token(t, "agent-c", audience, "agents")
	psql := psqlAs(t, gw, "agent-c", tok)
	for q, want := range map[string]string{
		"COPY (SELECT * FROM customers WHERE id < 3 ORDER BY id) TO STDOUT":                               "1\ta***@example.com\tAnn\n2\tb***@example.com\tBob",
		"COPY (SELECT c.email, c.id * 10 AS n, c.* FROM customers c WHERE id = 1) TO STDOUT (FORMAT csv)": "a***@example.com,10,1,a***@example.com,Ann",
		"COPY (SELECT email, id FROM public.customers WHERE id = 2) TO STDOUT":                            "b***@example.com\t2",
		"COPY (SELECT public.customers.email FROM public.customers WHERE id = 3) TO STDOUT":               "c***@example.com",
	} {
		r := psql(q)
		if r.Code != 0 || r.Out != want {
			t.Errorf("%s: code %d out %q err %q, want %q", q, r.Code, r.Out, r.Err, want)
		}
	}
	// In a transaction block too (described on the session's connection);
	// a query without a masked column needs no description.
	r := psql("BEGIN", "COPY (SELECT id, name FROM customers WHERE id = 1) TO STDOUT", "COPY (SELECT * FROM customers WHERE id = 1) TO STDOUT", "COMMIT")
	if r.Code != 0 || r.Out != "BEGIN\n1\tAnn\n1\ta***@example.com\tAnn\nCOMMIT" {
		t.Errorf("COPY (query) in a transaction: code %d out %q err %q", r.Code, r.Out, r.Err)
	}
	// The extended protocol plans from the catalog: the same rows outside
	// a transaction block; inside one the table must be qualified.
	w := login(t, gw.Listen, tok)
	data := extendedCopy(t, w, "COPY (SELECT email, id FROM customers WHERE id = 1) TO STDOUT")
	if len(data) != 1 || data[0] != "a***@example.com\t1\n" {
		t.Errorf("extended COPY (query): rows %q", data)
	}
	w.simpleQuery(t, "BEGIN")
	if _, e := extendedCopyResult(t, w, "COPY (SELECT * FROM customers) TO STDOUT"); e == nil || e.Code != "42501" ||
		!strings.Contains(e.Message, "qualify it with its schema (public.customers)") {
		t.Errorf("extended unqualified COPY (query) in a transaction: %+v, want a refusal", e)
	}
	w.simpleQuery(t, "ROLLBACK")
	// A whole row is refused; a system column next to a masked one is
	// described (simple protocol), not in the extended protocol.
	r = psql("COPY (SELECT customers FROM customers) TO STDOUT")
	if r.Code == 0 || !strings.Contains(r.Err, "42501") || strings.Contains(r.Out+r.Err, "@example.com") {
		t.Errorf("COPY of a whole row: code %d out %q err %q, want a refusal", r.Code, r.Out, r.Err)
	}
	r = psql("COPY (SELECT ctid, email FROM customers WHERE id = 1) TO STDOUT")
	if r.Code != 0 || r.Out != "(0,1)\ta***@example.com" {
		t.Errorf("COPY of ctid and email: code %d out %q err %q", r.Code, r.Out, r.Err)
	}
	if _, e := extendedCopyResult(t, w, "COPY (SELECT ctid, email FROM customers) TO STDOUT"); e == nil || e.Code != "42501" {
		t.Errorf("extended COPY of ctid and email: %+v, want a refusal", e)
	}
}

// TestCopyQueryProbed: a COPY (query) of any other shape (joins, subqueries,
// WITH) that returns a masked column is described on the session's own
// connection right before it runs, and its rows are masked by where each
// column comes from, as a SELECT's are; the session's uncommitted changes
// count; a query that fails to describe fails with its own error; where no
// probe can be sent (extended protocol, other statements in the same query
// string) it stays refused.
func TestCopyQueryProbed(t *testing.T) {
	pg, iss, gw := setup(t)
	pg.Psql(t, "app", `
		CREATE TABLE public.orders (id int, customer_id int, total int);
		INSERT INTO public.orders VALUES (10, 1, 100), (11, 2, 200);
		ALTER TABLE public.orders OWNER TO app;`)
	tok := iss.Token(t, "agent-c", audience, "agents")
	psql := psqlAs(t, gw, "agent-c", tok)
	noEmail := func(what string, r testenv.PsqlResult) {
		t.Helper()
		for _, e := range []string{"ann@example.com", "bob@example.com", "cy@example.com"} {
			if strings.Contains(r.Out+r.Err, e) {
				t.Errorf("%s leaks %q: out %q err %q", what, e, r.Out, r.Err)
			}
		}
	}
	for _, c := range []struct{ q, want string }{
		{"COPY (SELECT c.email, o.total FROM customers c JOIN orders o ON o.customer_id = c.id ORDER BY o.id) TO STDOUT",
			"a***@example.com\t100\nb***@example.com\t200"},
		// The subquery renames the column: its source still says email.
		{"COPY (SELECT s.contact, s.id FROM (SELECT email AS contact, id FROM customers) s WHERE s.id = 2) TO STDOUT (FORMAT csv)",
			"b***@example.com,2"},
		{"COPY (WITH x AS (SELECT id, email FROM customers) SELECT x.email AS e, o.id FROM x JOIN orders o ON o.customer_id = x.id WHERE o.id = 10) TO STDOUT",
			"a***@example.com\t10"},
		// psql's \copy sends COPY (query) TO STDOUT.
		{`\copy (SELECT o.id, c.* FROM orders o, customers c WHERE c.id = o.customer_id AND o.id = 11) to stdout`,
			"11\t2\tb***@example.com\tBob"},
	} {
		r := psql(c.q)
		if r.Code != 0 || r.Out != c.want {
			t.Errorf("%s: code %d out %q err %q, want %q", c.q, r.Code, r.Out, r.Err, c.want)
		}
		noEmail(c.q, r)
	}
	// The record counts what was masked, by source column, never the
	// values; the probe itself is not a command of its own.
	counted := 0
	for _, s := range listSessions(t, gw) {
		text, _, _ := testenv.Run(t, "replay", s.ID, "--store", gw.Store)
		noEmail("the record", testenv.PsqlResult{Out: text})
		if strings.Contains(text, "JOIN orders o ON o.customer_id = c.id ORDER BY o.id) TO STDOUT") &&
			strings.Contains(text, "masked: customers.email=2") && strings.Count(text, "ALLOW") == 1 {
			counted++
		}
	}
	if counted != 1 {
		t.Errorf("the COPY (join)'s masked count recorded in %d sessions, want 1", counted)
	}
	// The probe sees the session's transaction: a column added in it.
	r := psql("BEGIN", "ALTER TABLE orders ADD COLUMN note text DEFAULT 'n'",
		"COPY (SELECT o.note, c.email FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = 10) TO STDOUT",
		"ROLLBACK")
	if r.Code != 0 || r.Out != "BEGIN\nALTER TABLE\nn\ta***@example.com\nROLLBACK" {
		t.Errorf("COPY (join) after ALTER TABLE in the same transaction: code %d out %q err %q", r.Code, r.Out, r.Err)
	}
	noEmail("COPY (join) in a transaction", r)
	// A query that does not describe fails with its own error, in a
	// transaction block too (42P01, not 25P02 "current transaction is
	// aborted"); its text is withheld, as for any statement that reads a
	// masked column.
	for _, sqls := range [][]string{
		{"COPY (SELECT c.email FROM customers c JOIN nosuch n ON true) TO STDOUT"},
		{"BEGIN", "COPY (SELECT c.email FROM customers c JOIN nosuch n ON true) TO STDOUT", "ROLLBACK"},
	} {
		r := psql(sqls...)
		if !strings.Contains(r.Err, "ERROR:  42P01: regate: the server's message is withheld") || strings.Contains(r.Out, "@") {
			t.Errorf("%q: code %d out %q err %q, want the missing relation's error", sqls, r.Code, r.Out, r.Err)
		}
	}
	// No probe: other statements in the query string, or the extended
	// protocol. Refused before anything runs.
	r = psql("SELECT 1; COPY (SELECT c.email FROM customers c JOIN orders o ON o.customer_id = c.id) TO STDOUT")
	if r.Code == 0 || !strings.Contains(r.Err, "in COPY (query), which names no columns") {
		t.Errorf("COPY (join) after another statement: code %d out %q err %q, want a refusal", r.Code, r.Out, r.Err)
	}
	noEmail("COPY (join) after another statement", r)
	w := login(t, gw.Listen, tok)
	for _, m := range []pgproto3.FrontendMessage{
		&pgproto3.Parse{Query: "COPY (SELECT c.email FROM customers c JOIN orders o ON o.customer_id = c.id) TO STDOUT"},
		&pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}} {
		w.fe.Send(m)
	}
	if err := w.fe.Flush(); err != nil {
		t.Fatal(err)
	}
	var refused bool
	for done := false; !done; {
		switch m := w.receive(t).(type) {
		case *pgproto3.CopyData:
			t.Errorf("extended COPY (join): row %q sent", m.Data)
		case *pgproto3.ErrorResponse:
			refused = m.Code == "42501" && strings.Contains(m.Message, "in COPY (query), which names no columns")
		case *pgproto3.ReadyForQuery:
			done = true
		}
	}
	if !refused {
		t.Error("extended COPY (join) was not refused")
	}
	// The same text, described and masked in a simple Query, is still
	// refused when it comes again in the extended protocol of the same
	// session (the mask check's verdict for a described COPY is not
	// reused where no description can be made).
	w = login(t, gw.Listen, tok)
	join := "COPY (SELECT c.email FROM customers c JOIN orders o ON o.customer_id = c.id WHERE o.id = 10) TO STDOUT"
	w.send(t, &pgproto3.Query{String: join})
	var rows []string
	for done := false; !done; {
		switch m := w.receive(t).(type) {
		case *pgproto3.CopyData:
			rows = append(rows, string(m.Data))
		case *pgproto3.ReadyForQuery:
			done = true
		}
	}
	if len(rows) != 1 || rows[0] != "a***@example.com\n" {
		t.Errorf("simple COPY (join): rows %q", rows)
	}
	if data, e := extendedCopyResult(t, w, join); e == nil || e.Code != "42501" || len(data) != 0 {
		t.Errorf("extended COPY (join) after the simple one: rows %q, error %+v, want a refusal", data, e)
	}
	// Pipelined: Queries sent back to back, the COPY's behind a
	// transaction's BEGIN and an INSERT still in flight; its description
	// runs after them, in order, and sees the inserted row.
	w = login(t, gw.Listen, tok)
	for _, q := range []string{"BEGIN", "INSERT INTO orders VALUES (12, 3, 300)",
		"COPY (SELECT c.email, o.total FROM customers c JOIN orders o ON o.customer_id = c.id WHERE o.id = 12) TO STDOUT",
		"ROLLBACK", "SELECT count(*) FROM orders"} {
		w.fe.Send(&pgproto3.Query{String: q})
	}
	if err := w.fe.Flush(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for ready := 0; ready < 5; {
		switch m := w.receive(t).(type) {
		case *pgproto3.CommandComplete:
			got = append(got, string(m.CommandTag))
		case *pgproto3.CopyData:
			got = append(got, string(m.Data))
		case *pgproto3.DataRow:
			got = append(got, string(m.Values[0]))
		case *pgproto3.ErrorResponse:
			got = append(got, "ERROR "+m.Code+" "+m.Message)
		case *pgproto3.ReadyForQuery:
			ready++
			got = append(got, "Z"+string(m.TxStatus))
		}
	}
	if want := "BEGIN ZT INSERT 0 1 ZT c***@example.com\t300\n COPY 1 ZT ROLLBACK ZI 2 SELECT 1 ZI"; strings.Join(got, " ") != want {
		t.Errorf("pipelined COPY (join):\n got %q\nwant %q", strings.Join(got, " "), want)
	}
	// The session goes on, and the table is unchanged.
	if r := psql("SELECT count(*) FROM orders"); r.Out != "2" {
		t.Errorf("after the probes: out %q err %q", r.Out, r.Err)
	}
	if out := pg.Psql(t, "app", "SELECT email FROM customers WHERE id = 1"); out != "ann@example.com" {
		t.Errorf("the table itself: %q", out)
	}
}

// extendedCopy runs a COPY … TO STDOUT with Parse, Bind, Execute and Sync on
// a logged-in wire connection and returns its CopyData rows.
func extendedCopy(t *testing.T, w *wire, query string) []string {
	t.Helper()
	data, e := extendedCopyResult(t, w, query)
	if e != nil {
		t.Fatalf("extended %s: %s %s", query, e.Code, e.Message)
	}
	return data
}
