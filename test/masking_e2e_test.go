package test

import (
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

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
	psql := psqlAs(t, gw, "agent-f", tok)
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
