package test

import (
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/regate/regate/test/testenv"
)

// TestDefaultColumnMasks: the default library masks email, ssn, card_number
// and password columns in every result path, while the table is unchanged.
func TestDefaultColumnMasks(t *testing.T) {
	pg, iss, gw := setup(t)
	pg.Psql(t, "app", `ALTER TABLE customers ADD COLUMN card_number text;
		UPDATE customers SET card_number = '4111 1111 1111 1111' WHERE id = 1;`)
	tok := iss.Token(t, "agent-m", audience, "agents")
	secrets := []string{"ann@example.com", "bob@example.com", "4111 1111 1111 1111"}
	leaks := func(t *testing.T, what, out string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(out, s) {
				t.Errorf("%s leaks %q:\n%s", what, s, out)
			}
		}
	}
	for _, q := range []string{
		"SELECT id, name, email, card_number FROM customers ORDER BY id",
		"SELECT email AS contact, card_number AS c FROM customers", // aliases do not escape
		"SELECT c.email FROM customers c JOIN customers d ON c.id = d.id",
		"COPY customers TO STDOUT",
		"COPY customers (email, name) TO STDOUT WITH (FORMAT csv, HEADER)",
	} {
		r := testenv.PsqlVia(t, gw.Listen, "agent-m", "app", tok, []string{q})
		if r.Code != 0 || r.Out == "" {
			t.Fatalf("%s: code %d out %q err %q", q, r.Code, r.Out, r.Err)
		}
		leaks(t, q, r.Out)
		if !strings.Contains(q, "email AS") && strings.Contains(q, "name") && !strings.Contains(r.Out, "Ann") {
			t.Errorf("%s: unmasked columns lost: %q", q, r.Out)
		}
	}
	// A value computed from a masked column, or a whole row, has no source
	// a column mask could find: refused before it runs, in both protocols.
	for _, q := range []string{
		"SELECT lower(email) FROM customers",
		"SELECT c FROM customers c",
		"SELECT name FROM customers UNION ALL SELECT email FROM customers",
		"SELECT c.concat FROM customers c", // functional notation: concat(c), the whole row
		"SELECT c.quote_literal FROM customers c",
		"COPY (SELECT lower(email) FROM customers) TO STDOUT",
		"COPY (SELECT * FROM customers UNION ALL SELECT * FROM customers) TO STDOUT",
		"COPY (SELECT lower(c.email) FROM customers c JOIN customers d USING (id)) TO STDOUT",
	} {
		r := testenv.PsqlVia(t, gw.Listen, "agent-m", "app", tok, []string{q})
		if r.Code == 0 || !strings.Contains(r.Err, `the policy masks column`) {
			t.Errorf("%s: code %d out %q err %q, want a refusal naming the mask", q, r.Code, r.Out, r.Err)
		}
		leaks(t, q, r.Out+r.Err)
	}
	// A whole row of a subquery without masked columns holds nothing to
	// mask; a data-modifying WITH query in FROM is checked without a panic
	// (it once took the whole process down), and the session goes on.
	if r := testenv.PsqlVia(t, gw.Listen, "agent-m", "app", tok, []string{
		"SELECT json_agg(o ORDER BY o.id) FROM (SELECT id, name FROM customers) o",
		"WITH d AS (DELETE FROM customers WHERE id = 99 RETURNING id) SELECT count(*) FROM d",
		"SELECT 40 + 2",
	}); r.Code != 0 || !strings.Contains(r.Out, `{"id":3,"name":"Cy"}]`) || !strings.HasSuffix(r.Out, "]\n0\n42") {
		t.Errorf("whole row of a clean subquery, data-modifying WITH: code %d out %q err %q", r.Code, r.Out, r.Err)
	}
	// Texts that differ only in integer literals share a parse template and
	// the mask check's verdict: each one is still masked or refused.
	r := testenv.PsqlVia(t, gw.Listen, "agent-m", "app", tok, []string{
		"SELECT email FROM customers WHERE id = 1",
		"SELECT email FROM customers WHERE id = 2",
		"SELECT id FROM customers WHERE id = 3",
		"SELECT email FROM customers WHERE id = 1",
	})
	if lines := strings.Split(r.Out, "\n"); r.Code != 0 || len(lines) != 4 || lines[2] != "3" || lines[0] != lines[3] ||
		!strings.Contains(lines[0], "@") || lines[0] == lines[1] {
		t.Errorf("templated texts under column masks: code %d out %q err %q", r.Code, r.Out, r.Err)
	}
	leaks(t, "templated texts", r.Out)
	// An ORM's qualified columns: customers.name is a column (PostgreSQL
	// rejects attribute-style casts of a whole row), masked as itself.
	if r := testenv.PsqlVia(t, gw.Listen, "agent-m", "app", tok, []string{
		"SELECT customers.id, customers.name, customers.email FROM customers ORDER BY customers.id LIMIT 1",
	}); r.Code != 0 || r.Out != "1|Ann|a***@example.com" {
		t.Errorf("qualified columns: code %d out %q err %q", r.Code, r.Out, r.Err)
	}
	// Nullness is not the value: IS [NOT] NULL of a masked column runs.
	if r := testenv.PsqlVia(t, gw.Listen, "agent-m", "app", tok, []string{
		"SELECT id, email IS NOT NULL FROM customers ORDER BY id LIMIT 2",
	}); r.Code != 0 || r.Out != "1|t\n2|t" {
		t.Errorf("IS NOT NULL of a masked column: code %d out %q err %q", r.Code, r.Out, r.Err)
	}
	// COPY (query) whose output holds no masked column runs.
	if r := testenv.PsqlVia(t, gw.Listen, "agent-m", "app", tok,
		[]string{"COPY (SELECT id, name FROM customers WHERE id = 1) TO STDOUT"}); r.Code != 0 || r.Out != "1\tAnn" {
		t.Errorf("COPY (query) without masked columns: code %d out %q err %q", r.Code, r.Out, r.Err)
	}
	// The extended protocol, binary formats included.
	ctx, conn := connectPgx(t, gw.Listen, tok)
	// PostgreSQL's error texts can quote a value (here a failed cast in
	// WHERE): for a statement that reads a masked column they are withheld,
	// the SQLSTATE stays; other statements keep theirs.
	var pgErr *pgconn.PgError
	_, err := conn.Exec(ctx, "SELECT id FROM customers WHERE card_number::numeric > $1", 0)
	if !errors.As(err, &pgErr) || pgErr.Code != "22P02" || !strings.Contains(pgErr.Message, "withheld") {
		t.Fatalf("error of a statement reading a masked column: %v, want 22P02 with its text withheld", err)
	}
	leaks(t, "an error text", pgErr.Message+pgErr.Detail)
	if _, err := conn.Exec(ctx, "SELECT id / 0 FROM customers WHERE id = $1", 1); !errors.As(err, &pgErr) ||
		pgErr.Message != "division by zero" {
		t.Fatalf("error of a statement reading no masked column: %v, want PostgreSQL's own text", err)
	}
	// Past the memo's learning point, and alternating with an allowed
	// statement under the same (memoized) masks, every execution is checked.
	for i := range 12 {
		var e string
		if err := conn.QueryRow(ctx, "SELECT email FROM customers WHERE id = $1", 1).Scan(&e); err != nil || e == "ann@example.com" {
			t.Fatalf("pgx execution %d: %q, %v", i, e, err)
		}
		if _, err := conn.Exec(ctx, "SELECT upper(email) FROM customers WHERE id = $1", 1); err == nil ||
			!strings.Contains(err.Error(), "the policy masks column") {
			t.Fatalf("pgx execution %d, computed from a masked column: %v, want a refusal", i, err)
		}
	}
	var email, name string
	if err := conn.QueryRow(ctx, "SELECT email, name FROM customers WHERE id = $1", 1).Scan(&email, &name); err != nil {
		t.Fatal(err)
	}
	leaks(t, "pgx", email)
	if name != "Ann" || email == "" {
		t.Fatalf("pgx: email %q name %q", email, name)
	}
	// Parse, Bind, Describe of the portal, Execute, Sync (libpq's
	// PQexecParams, pgbench -M extended): the client's own Describe plans the
	// masks, in text and in binary.
	for _, format := range []int16{0, 1} {
		rr := conn.PgConn().ExecParams(ctx, "SELECT email, name, card_number FROM customers WHERE id = $1",
			[][]byte{[]byte("1")}, nil, nil, []int16{format}).Read()
		if rr.Err != nil || len(rr.Rows) != 1 || len(rr.FieldDescriptions) != 3 {
			t.Fatalf("ExecParams (format %d): %v, %d rows", format, rr.Err, len(rr.Rows))
		}
		row := rr.Rows[0]
		leaks(t, "ExecParams", string(row[0])+" "+string(row[2]))
		if string(row[1]) != "Ann" || len(row[0]) == 0 {
			t.Fatalf("ExecParams (format %d): row %q", format, row)
		}
	}
	// The table itself is untouched.
	if got := pg.Psql(t, "app", "SELECT email FROM customers WHERE id = 1"); got != "ann@example.com" {
		t.Fatalf("the table changed: %q", got)
	}
	// The record counts what was masked, never the values.
	counted, shown, blocked := 0, 0, 0
	for _, s := range listSessions(t, gw) {
		rep, _, _ := testenv.Run(t, "replay", s.ID, "--json", "--store", gw.Store)
		leaks(t, "the record", rep)
		if strings.Contains(rep, `"customers.email": 3`) && strings.Contains(rep, `"customers.card_number": 1`) {
			counted++
		}
		text, _, _ := testenv.Run(t, "replay", s.ID, "--store", gw.Store)
		if strings.Contains(text, "masked: customers.card_number=1 customers.email=3") {
			shown++
		}
		// Allowed by the policy, refused by regate: BLOCK, not ALLOW.
		if strings.Contains(text, "BLOCK  SELECT lower(email) FROM customers") {
			blocked++
		}
	}
	if counted < 3 || shown != counted { // the plain SELECT, the aliased SELECT and the join
		t.Errorf("masked counts recorded in %d sessions and shown by replay in %d, want >= 3 both", counted, shown)
	}
	if blocked != 1 {
		t.Errorf("replay shows the refused computed column as BLOCK in %d sessions, want 1", blocked)
	}
}

// TestCustomMasks: a policy written from the documented contract masks by
// table.column and turns a non-text column into NULL.
func TestCustomMasks(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.Psql(t, "app", `CREATE TABLE people (id int, secret text, age int, notes text);
		INSERT INTO people VALUES (1, 'hunter2', 42, 'paid with 4111-1111-1111-1111, receipt to ann@example.com');
		ALTER TABLE people OWNER TO app;`)
	iss := testenv.StartIssuer(t)
	dir := t.TempDir()
	writeFile(t, dir, "policy.rego", `package regate

import rego.v1

decision := {"allow": true, "mask": [
	{"column": "people.secret", "with": "[hidden]"},
	{"column": "age"},
	{"detector": "credit_card"},
	{"detector": "email", "with": "<email>"},
]}
`)
	gw := testenv.StartGateway(t, pg, testenv.GatewayOptions{Issuer: iss.URL(), Audience: audience, Bundle: dir})
	tok := iss.Token(t, "agent-c", audience)
	r := testenv.PsqlVia(t, gw.Listen, "agent-c", "app", tok, []string{"SELECT id, secret, age, notes FROM people"})
	if want := "1|[hidden]||paid with ****-****-****-1111, receipt to <email>"; r.Out != want {
		t.Fatalf("got %q, want %q (err %q)", r.Out, want, r.Err)
	}
	r = testenv.PsqlVia(t, gw.Listen, "agent-c", "app", tok, []string{"COPY people (notes, secret) TO STDOUT"})
	if want := "paid with ****-****-****-1111, receipt to <email>\t[hidden]"; r.Out != want {
		t.Fatalf("COPY: got %q, want %q (err %q)", r.Out, want, r.Err)
	}
	// A custom delimiter that occurs in the data (PostgreSQL escapes it).
	r = testenv.PsqlVia(t, gw.Listen, "agent-c", "app", tok, []string{`COPY people (notes, secret) TO STDOUT WITH (DELIMITER '@')`})
	if want := "paid with ****-****-****-1111, receipt to <email>@[hidden]"; r.Out != want {
		t.Fatalf("COPY with DELIMITER '@': got %q, want %q (err %q)", r.Out, want, r.Err)
	}
	ctx, conn := connectPgx(t, gw.Listen, tok)
	var notes string
	var age *int
	if err := conn.QueryRow(ctx, "SELECT notes, age FROM people WHERE id = $1", 1).Scan(&notes, &age); err != nil {
		t.Fatal(err)
	}
	if notes != "paid with ****-****-****-1111, receipt to <email>" || age != nil {
		t.Fatalf("pgx (binary results): notes %q age %v", notes, age)
	}
	// Arrays and records hold text values too: a detector's match makes the
	// whole value NULL (a replacement could break their syntax), in text
	// and in binary format.
	r = testenv.PsqlVia(t, gw.Listen, "agent-c", "app", tok,
		[]string{"SELECT ARRAY[notes], (notes, 1), ARRAY['no secret'], array_agg(notes) FROM people GROUP BY notes"})
	if want := "||{\"no secret\"}|"; r.Out != want {
		t.Fatalf("arrays and records: got %q, want %q (err %q)", r.Out, want, r.Err)
	}
	var arr []string
	if err := conn.QueryRow(ctx, "SELECT array_agg(notes) FROM people WHERE id = $1", 1).Scan(&arr); err != nil {
		t.Fatal(err)
	}
	if arr != nil {
		t.Fatalf("pgx, binary text[] with a card number: %q, want NULL", arr)
	}
}

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
	psql := func(sqls ...string) testenv.PsqlResult {
		return testenv.PsqlVia(t, gw.Listen, "agent-q", "app", tok, sqls)
	}
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
	// Generated columns are not in COPY's output (nor masked by name: one
	// computed from a masked column is a column of another name).
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
	psql := func(sqls ...string) testenv.PsqlResult {
		return testenv.PsqlVia(t, gw.Listen, "agent-c", "app", tok, sqls)
	}
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
	psql := func(sqls ...string) testenv.PsqlResult {
		return testenv.PsqlVia(t, gw.Listen, "agent-c", "app", tok, sqls)
	}
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

// TestRowFunctionsMasked: attribute notation c.f calls f(c) when c has no
// column f, so a function of the database's own that takes a table's row
// (a "computed field") returns what it likes of the row. Under column masks
// regate knows such functions from the target's catalog and refuses c.f as a
// whole-row value; a function created in a transaction that has not ended
// (which its catalog connection cannot see) makes every c.x in output
// positions suspect until it ends.
func TestRowFunctionsMasked(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.Psql(t, "app", `
		CREATE TABLE public.customers (id int PRIMARY KEY, email text NOT NULL, name text NOT NULL);
		INSERT INTO public.customers VALUES (1, 'ann@example.com', 'Ann'), (2, 'bob@example.com', 'Bob');
		ALTER TABLE public.customers OWNER TO app;
		CREATE FUNCTION public.display(c public.customers) RETURNS text LANGUAGE sql
			AS $$ SELECT c.name || ' <' || c.email || '>' $$;`)
	iss := testenv.StartIssuer(t)
	dir := t.TempDir()
	// Allows everything (CREATE FUNCTION too), masks email.
	writeFile(t, dir, "policy.rego", `package regate

import rego.v1

decision := {"allow": true, "mask": [{"column": "email"}]}
`)
	gw := testenv.StartGateway(t, pg, testenv.GatewayOptions{Issuer: iss.URL(), Audience: audience, Bundle: dir})
	tok := iss.Token(t, "agent-f", audience)
	psql := func(sqls ...string) testenv.PsqlResult {
		return testenv.PsqlVia(t, gw.Listen, "agent-f", "app", tok, sqls)
	}
	noEmail := func(what string, r testenv.PsqlResult) {
		t.Helper()
		if strings.Contains(r.Out, "@example.com") || strings.Contains(r.Err, "@example.com") {
			t.Fatalf("%s: a masked value came through: out %q err %q", what, r.Out, r.Err)
		}
	}

	// The function exists before regate's first look at the catalog.
	for _, q := range []string{
		"SELECT c.display FROM customers c WHERE id = 1",
		"SELECT upper(c.display) FROM customers c WHERE id = 1",
		"SELECT x FROM (SELECT customers.display AS x FROM customers) s",
	} {
		r := psql(q)
		noEmail(q, r)
		if r.Code == 0 || !strings.Contains(r.Err, "42501") || !strings.Contains(r.Err, "display is a function of the row") {
			t.Fatalf("%s: want a refusal naming the function, got code %d out %q err %q", q, r.Code, r.Out, r.Err)
		}
	}
	// Columns in attribute notation still run, masked.
	if r := psql("SELECT c.id, c.name, c.email FROM customers c ORDER BY c.id"); r.Code != 0 ||
		r.Out != "1|Ann|a***@example.com\n2|Bob|b***@example.com" {
		t.Fatalf("qualified columns: code %d out %q err %q", r.Code, r.Out, r.Err)
	}
	// In WHERE, what a function reads is not output (as for columns).
	if r := psql("SELECT c.id FROM customers c WHERE c.display LIKE 'Ann%'"); r.Code != 0 || r.Out != "1" {
		t.Fatalf("function in WHERE: code %d out %q err %q", r.Code, r.Out, r.Err)
	}

	// Created through regate inside a transaction: the catalog connection
	// cannot see it, so c.x in output positions is refused until it ends.
	ctx, conn := connectPgx(t, gw.Listen, tok)
	mustExec(t, ctx, conn, "BEGIN")
	mustExec(t, ctx, conn, "CREATE FUNCTION public.leak(c public.customers) RETURNS text LANGUAGE sql AS $$ SELECT c.email $$")
	var s string
	err := conn.QueryRow(ctx, "SELECT c.leak FROM customers c WHERE c.id = 1").Scan(&s)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" || !strings.Contains(pgErr.Message, "created or changed functions") {
		t.Fatalf("c.leak in the creating transaction: got %q, %v", s, err)
	}
	mustExec(t, ctx, conn, "ROLLBACK")
	// After it ends, qualified columns run again.
	if err := conn.QueryRow(ctx, "SELECT c.name FROM customers c WHERE c.id = 1").Scan(&s); err != nil || s != "Ann" {
		t.Fatalf("after ROLLBACK: got %q, %v", s, err)
	}
	// Created and committed through regate: the catalog cache is refreshed
	// once the session is idle, so the very next statement knows it.
	mustExec(t, ctx, conn, "CREATE FUNCTION public.leak2(c public.customers) RETURNS text LANGUAGE sql AS $$ SELECT c.email $$")
	err = conn.QueryRow(ctx, "SELECT c.leak2 FROM customers c WHERE c.id = 1").Scan(&s)
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" || !strings.Contains(pgErr.Message, "leak2 is a function of the row") {
		t.Fatalf("c.leak2 after it was committed: got %q, %v", s, err)
	}
	// ... in another session too.
	if r := psql("SELECT c.leak2 FROM customers c WHERE id = 1"); r.Code == 0 || !strings.Contains(r.Err, "leak2 is a function of the row") {
		t.Fatalf("c.leak2 in another session: code %d out %q err %q", r.Code, r.Out, r.Err)
	}
	// count(email) gives how many rows have an email, while count is
	// PostgreSQL's own; an aggregate named count of the database's own
	// (created here through regate, so known at once) would take text more
	// exactly than count("any") and return the values.
	if r := psql("SELECT count(email), count(DISTINCT email) FROM customers"); r.Code != 0 || r.Out != "2|2" {
		t.Fatalf("count(email): code %d out %q err %q", r.Code, r.Out, r.Err)
	}
	mustExec(t, ctx, conn, "CREATE AGGREGATE public.count(text) (SFUNC = textcat, STYPE = text)")
	r := psql("SELECT count(email) FROM customers")
	noEmail("count(email) with an own count(text)", r)
	if r.Code == 0 || !strings.Contains(r.Err, "inside an expression") {
		t.Fatalf("count(email) with an own count(text): code %d out %q err %q", r.Code, r.Out, r.Err)
	}
	if got := pg.Psql(t, "app", "SELECT count(email) FROM customers"); !strings.Contains(got, "@example.com") {
		t.Fatalf("directly, count(email) should now be the own aggregate: %q", got)
	}
	if r := psql("SELECT pg_catalog.count(email) FROM customers"); r.Code != 0 || r.Out != "2" {
		t.Fatalf("pg_catalog.count(email): code %d out %q err %q", r.Code, r.Out, r.Err)
	}

	// One query string that creates a function and uses it: refused before
	// anything runs.
	r = psql(`CREATE FUNCTION public.leak3(c public.customers) RETURNS text LANGUAGE sql AS $$ SELECT c.email $$; ` +
		`SELECT c.leak3 FROM customers c`)
	noEmail("create and use in one query", r)
	if r.Code == 0 || !strings.Contains(r.Err, "created or changed functions") {
		t.Fatalf("create and use in one query: code %d out %q err %q", r.Code, r.Out, r.Err)
	}
	if got := pg.Psql(t, "app", "SELECT count(*) FROM pg_proc WHERE proname = 'leak3'"); got != "0" {
		t.Fatalf("the refused query string ran in part: %s functions leak3", got)
	}
}
