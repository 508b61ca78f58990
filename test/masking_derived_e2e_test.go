package test

import (
	"strings"
	"testing"

	"github.com/regate/regate/test/testenv"
)

// TestGeneratedColumnsMasked: a generated column computed from a masked
// column is masked like it (the default library masks email), whether the
// target's catalog knows it, or the session created it in a transaction
// that has not ended, or another session created it through regate a
// moment before; a generated column computed from other columns is not.
func TestGeneratedColumnsMasked(t *testing.T) {
	pg, iss, gw := setup(t)
	pg.Psql(t, "app", `ALTER TABLE customers
		ADD COLUMN domain text GENERATED ALWAYS AS (split_part(email, '@', 2)) STORED,
		ADD COLUMN elen int GENERATED ALWAYS AS (length(email) + id) STORED,
		ADD COLUMN shout text GENERATED ALWAYS AS (upper(name)) STORED`)
	tok := iss.Token(t, "agent-g", audience, "agents")
	psql := psqlAs(t, gw, "agent-g", tok)
	noLeak := func(what string, r testenv.PsqlResult, secrets ...string) {
		t.Helper()
		for _, s := range append(secrets, "ann@example.com", "bob@example.com", "|example.com") {
			if strings.Contains(r.Out+r.Err, s) {
				t.Errorf("%s leaks %q: out %q err %q", what, s, r.Out, r.Err)
			}
		}
	}
	// Text gets the mask's replacement, an integer (which cannot hold it)
	// NULL; the column computed from name is untouched; an alias does not
	// escape; the email itself is masked as before.
	r := psql("SELECT id, domain, elen, shout FROM customers WHERE id <= 2 ORDER BY id",
		"SELECT domain AS d, email FROM customers WHERE id = 1")
	if want := "1|********||ANN\n2|********||BOB\n********|a***@example.com"; r.Code != 0 || r.Out != want {
		t.Errorf("generated columns: code %d out %q err %q, want %q", r.Code, r.Out, r.Err, want)
	}
	noLeak("SELECT of generated columns", r, "|16|", "|17|")
	// A value computed from it is refused, as one computed from email is.
	for _, q := range []string{"SELECT lower(domain) FROM customers", "SELECT elen * 2 FROM customers",
		"COPY (SELECT 'x' || domain FROM customers) TO STDOUT"} {
		if r := psql(q); r.Code == 0 || !strings.Contains(r.Err, "the policy masks column") {
			t.Errorf("%s: code %d out %q err %q, want a refusal naming the mask", q, r.Code, r.Out, r.Err)
		}
	}
	// COPY (query) of it, described on the session's connection.
	r = psql("COPY (SELECT id, domain, shout FROM customers ORDER BY id) TO STDOUT WITH (FORMAT csv)")
	if r.Code != 0 || !strings.HasPrefix(r.Out, "1,********,ANN\n2,********,BOB\n") {
		t.Errorf("COPY of a generated column: code %d out %q err %q", r.Code, r.Out, r.Err)
	}
	noLeak("COPY of a generated column", r)

	// Created in the session's open transaction: regate's catalog
	// connection cannot see it, the session's own statement says it.
	r = psql("BEGIN",
		"ALTER TABLE customers ADD COLUMN local text GENERATED ALWAYS AS (split_part(customers.email, '@', 1)) STORED",
		"SELECT local FROM customers WHERE id = 1",
		"SELECT upper(local) FROM customers WHERE id = 1",
		"ROLLBACK")
	if !strings.HasPrefix(r.Out, "BEGIN\nALTER TABLE\n") || strings.Contains(r.Out, "\nann\n") ||
		!strings.Contains(r.Err, "the policy masks column") {
		t.Errorf("generated column of the open transaction: code %d out %q err %q", r.Code, r.Out, r.Err)
	}
	noLeak("generated column of the open transaction", r, "ANN\n", "\nann")
	// A column added or renamed to a masked name in the open transaction,
	// read under an alias: the catalog knows neither. The added column is
	// masked (the default ssn mask keeps the last four digits); of a table
	// with a renamed column every column is, until the transaction ends
	// (an integer becomes NULL).
	r = psql("BEGIN",
		"ALTER TABLE customers ADD COLUMN ssn text DEFAULT '123-45-6789'",
		"SELECT ssn AS x, name FROM customers WHERE id = 1",
		"ROLLBACK",
		"BEGIN",
		"ALTER TABLE customers RENAME COLUMN name TO password",
		"SELECT password AS x, id FROM customers WHERE id = 1",
		"ROLLBACK")
	if want := "BEGIN\nALTER TABLE\n***-**-6789|Ann\nROLLBACK\nBEGIN\nALTER TABLE\n********|\nROLLBACK"; r.Code != 0 || r.Out != want {
		t.Errorf("column added or renamed in the open transaction: code %d out %q err %q, want %q", r.Code, r.Out, r.Err, want)
	}
	noLeak("column added or renamed in the open transaction", r, "123-45-6789", "|Ann\nROLLBACK\nBEGIN\nALTER TABLE\nAnn")
	// Created through regate and committed: the next session (another
	// agent, another connection) sees it masked at once.
	if r := psql("ALTER TABLE customers ADD COLUMN local2 text GENERATED ALWAYS AS (split_part(email, '@', 1)) STORED"); r.Code != 0 {
		t.Fatalf("ALTER TABLE through regate: code %d err %q", r.Code, r.Err)
	}
	tok2 := iss.Token(t, "agent-h", audience, "agents")
	r = testenv.PsqlVia(t, gw.Listen, "agent-h", "app", tok2, []string{"SELECT local2 FROM customers WHERE id = 2"})
	if r.Code != 0 || r.Out == "" || r.Out == "bob" {
		t.Errorf("generated column added through regate: code %d out %q err %q", r.Code, r.Out, r.Err)
	}
	// The table itself is unchanged.
	if got := pg.Psql(t, "app", "SELECT domain, elen, local2 FROM customers WHERE id = 1"); got != "example.com|16|ann" {
		t.Errorf("table: %q", got)
	}
	// The record counts the masked values by generated column, never the values.
	found := false
	for _, s := range listSessions(t, gw) {
		text, _, _ := testenv.Run(t, "replay", s.ID, "--store", gw.Store)
		if strings.Contains(text, "customers.domain=") {
			found = true
		}
		if strings.Contains(text, "example.com") && strings.Contains(text, "customers.domain") {
			t.Errorf("record of session %s holds a raw value:\n%s", s.ID, text)
		}
	}
	if !found {
		t.Error("no record counts masked values of customers.domain")
	}
}

// TestMaskedValuesNotCopied: a masked column's values may go to the client
// (masked) or back into a column the mask covers, but not into another
// table, a view or a file, from which the agent could read them under
// another name: those statements are refused before they run, and nothing
// is written.
func TestMaskedValuesNotCopied(t *testing.T) {
	pg, iss, gw := setup(t)
	pg.Psql(t, "app", `CREATE TABLE public.notes (id int, body text);
		ALTER TABLE public.notes OWNER TO app;
		CREATE TABLE public.leads (id int, email text);
		ALTER TABLE public.leads OWNER TO app;`)
	tok := iss.Token(t, "agent-w", audience, "agents")
	psql := psqlAs(t, gw, "agent-w", tok)
	for _, q := range []string{
		"INSERT INTO notes SELECT id, email FROM customers",
		"INSERT INTO notes (id, body) SELECT id, email FROM customers",
		"UPDATE notes SET body = c.email FROM customers c WHERE c.id = notes.id",
		"CREATE TABLE stash AS SELECT id, email AS contact FROM customers",
		"SELECT email AS contact INTO stash FROM customers",
		"CREATE VIEW peek AS SELECT id, email AS contact FROM customers",
		"CREATE MATERIALIZED VIEW peek AS SELECT lower(email) FROM customers",
		"MERGE INTO notes n USING customers c ON n.id = c.id WHEN NOT MATCHED THEN INSERT (id, body) VALUES (c.id, c.email)",
		"WITH w AS (INSERT INTO notes (id, body) SELECT id, email FROM customers RETURNING id) SELECT count(*) FROM w",
		"CREATE RULE spy AS ON UPDATE TO customers DO ALSO INSERT INTO notes VALUES (NEW.id, NEW.email)",
	} {
		r := psql(q)
		if r.Code == 0 || !strings.Contains(r.Err, "42501") ||
			!strings.Contains(r.Err, "into a table, a view or a file, where no mask follows it") {
			t.Errorf("%s: code %d out %q err %q, want a refusal", q, r.Code, r.Out, r.Err)
		}
	}
	// Renaming the column would take it out of the mask.
	if r := psql("ALTER TABLE customers RENAME COLUMN email TO contact"); r.Code == 0 ||
		!strings.Contains(r.Err, "would take out of the mask's reach by renaming it") {
		t.Errorf("rename of a masked column: code %d out %q err %q, want a refusal", r.Code, r.Out, r.Err)
	}
	// Functions that read what the statement does not name: the default
	// library blocks them, and under column masks regate would anyway.
	for _, q := range []string{"SELECT query_to_xml('SELECT email FROM customers', true, false, '')",
		"SELECT word FROM ts_stat('SELECT to_tsvector(email) FROM customers')"} {
		r := psql(q)
		if r.Code == 0 || !strings.Contains(r.Err, "42501") || !strings.Contains(r.Err, "runs a query or reads a table") {
			t.Errorf("%s: code %d out %q err %q, want a refusal", q, r.Code, r.Out, r.Err)
		}
		if strings.Contains(r.Out+r.Err, "ann@example.com") {
			t.Errorf("%s leaks: out %q err %q", q, r.Out, r.Err)
		}
	}
	if got := pg.Psql(t, "app", `SELECT (SELECT count(*) FROM notes), to_regclass('stash') IS NULL,
		to_regclass('peek') IS NULL, (SELECT count(*) FROM pg_rules WHERE rulename = 'spy'),
		(SELECT count(*) FROM information_schema.columns WHERE table_name = 'customers' AND column_name = 'email')`); got != "0|t|t|0|1" {
		t.Errorf("something was written: notes rows, no stash, no peek, no rule, email column = %q", got)
	}
	// Back into a column the mask covers, the values stay masked; other
	// columns are written as usual, in a transaction too.
	r := psql("BEGIN",
		"INSERT INTO leads (id, email) SELECT id, email FROM customers WHERE id = 1",
		"UPDATE leads SET email = upper(email) WHERE id = 1",
		"INSERT INTO notes (id, body) SELECT id, name FROM customers WHERE id = 2",
		"CREATE TABLE names AS SELECT id, name FROM customers",
		"COMMIT",
		"SELECT email FROM leads")
	if want := "BEGIN\nINSERT 0 1\nUPDATE 1\nINSERT 0 1\nSELECT 3\nCOMMIT\nA***@EXAMPLE.COM"; r.Code != 0 || r.Out != want {
		t.Errorf("writes into covered columns: code %d out %q err %q, want %q", r.Code, r.Out, r.Err, want)
	}
	if got := pg.Psql(t, "app", "SELECT (SELECT email FROM leads), (SELECT body FROM notes), (SELECT count(*) FROM names)"); got != "ANN@EXAMPLE.COM|Bob|3" {
		t.Errorf("tables: %q", got)
	}
}

// TestViewColumnsMasked: a view column that returns a masked column (as
// itself or computed from it) is masked like it, also through a view of
// the view and a materialized view; other view columns are not, and a value
// computed from a masked view column is refused as one computed from the
// column is. The views are created outside regate, as a DBA would.
func TestViewColumnsMasked(t *testing.T) {
	pg, iss, gw := setup(t)
	pg.Psql(t, "app", `
		CREATE VIEW contacts AS SELECT id, email AS contact, split_part(email, '@', 2) AS domain, name FROM customers;
		CREATE VIEW contacts2 AS SELECT c.contact AS c2, c.name AS n2, upper(c.name) AS shout FROM contacts c;
		CREATE MATERIALIZED VIEW mcontacts AS SELECT id, email AS m FROM customers;
		CREATE VIEW everyone AS SELECT name FROM customers UNION SELECT email FROM customers;
		CREATE VIEW plain AS SELECT id, name FROM customers;
		GRANT SELECT ON contacts, contacts2, mcontacts, everyone, plain TO app;
		CREATE FUNCTION search_customers(p text) RETURNS SETOF customers LANGUAGE sql STABLE
			AS 'SELECT * FROM customers WHERE name LIKE p';`)
	tok := iss.Token(t, "agent-v", audience, "agents")
	psql := psqlAs(t, gw, "agent-v", tok)
	r := psql("SELECT id, contact, domain, name FROM contacts WHERE id = 1",
		"SELECT c2, n2, shout FROM contacts2 WHERE n2 = 'Bob'",
		"SELECT m AS x FROM mcontacts WHERE id = 3",
		"SELECT name FROM everyone ORDER BY 1 LIMIT 1",
		"SELECT id, name FROM plain WHERE id = 2")
	want := "1|a***@example.com|********|Ann\nb***@example.com|Bob|BOB\nc***@example.com\n********\n2|Bob"
	if r.Code != 0 || r.Out != want {
		t.Errorf("view columns: code %d out %q err %q, want %q", r.Code, r.Out, r.Err, want)
	}
	for _, q := range []string{"SELECT lower(contact) FROM contacts", "SELECT c2 || '' FROM contacts2",
		"COPY (SELECT upper(m) FROM mcontacts) TO STDOUT"} {
		if r := psql(q); r.Code == 0 || !strings.Contains(r.Err, "the policy masks column") {
			t.Errorf("%s: code %d out %q err %q, want a refusal naming the mask", q, r.Code, r.Out, r.Err)
		}
	}
	// A function returning a table's rows: its columns have no source, so
	// they are masked by name, and renaming one is refused.
	if r := psql("SELECT id, email FROM search_customers('A%')"); r.Code != 0 || r.Out != "1|a***@example.com" {
		t.Errorf("a function's rows: code %d out %q err %q", r.Code, r.Out, r.Err)
	}
	for _, q := range []string{"SELECT email AS x FROM search_customers('A%')",
		"SELECT x FROM (SELECT email AS x FROM search_customers('A%')) s"} {
		if r := psql(q); r.Code == 0 || !strings.Contains(r.Err, "a function's in FROM") {
			t.Errorf("%s: code %d out %q err %q, want a refusal", q, r.Code, r.Out, r.Err)
		}
	}
	// A column of another table that happens to share a masked view
	// column's name is not affected.
	if r := psql("SELECT upper(name) AS contact FROM customers WHERE id = 1"); r.Code != 0 || r.Out != "ANN" {
		t.Errorf("an unrelated column: code %d out %q err %q", r.Code, r.Out, r.Err)
	}
}

// TestPartitionColumnsMasked: a mask naming a table's column covers the
// same column of its partitions (at any depth) and of tables that inherit
// from it, which PostgreSQL reports as tables of their own when a statement
// names them.
func TestPartitionColumnsMasked(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.Psql(t, "app", `CREATE TABLE logins (id int, at date, secret text) PARTITION BY RANGE (at);
		CREATE TABLE logins_2026 PARTITION OF logins FOR VALUES FROM ('2026-01-01') TO ('2027-01-01') PARTITION BY LIST (id);
		CREATE TABLE logins_2026_a PARTITION OF logins_2026 FOR VALUES IN (1, 2);
		CREATE TABLE legacy (id int, secret text);
		CREATE TABLE old_logins (note text) INHERITS (legacy);
		INSERT INTO logins VALUES (1, '2026-03-01', 'hunter2'), (2, '2026-04-01', 'letmein');
		INSERT INTO old_logins VALUES (2, 'swordfish', 'n');
		ALTER TABLE logins OWNER TO app; ALTER TABLE logins_2026 OWNER TO app;
		ALTER TABLE logins_2026_a OWNER TO app; ALTER TABLE old_logins OWNER TO app; ALTER TABLE legacy OWNER TO app;`)
	iss := testenv.StartIssuer(t)
	dir := t.TempDir()
	writeFile(t, dir, "policy.rego", `package regate

import rego.v1

decision := {"allow": true, "mask": [
	{"column": "public.logins.secret", "with": "[hidden]"},
	{"column": "legacy.secret", "with": "[hidden]"},
]}
`)
	gw := testenv.StartGateway(t, pg, testenv.GatewayOptions{Issuer: iss.URL(), Audience: audience, Bundle: dir})
	tok := iss.Token(t, "agent-p", audience)
	psql := psqlAs(t, gw, "agent-p", tok)
	r := psql("SELECT id, secret FROM logins ORDER BY id",
		"SELECT secret AS s FROM logins_2026 WHERE id = 1",
		"SELECT id, secret FROM ONLY logins_2026_a WHERE id = 2",
		"SELECT secret, note FROM old_logins")
	if want := "1|[hidden]\n2|[hidden]\n[hidden]\n2|[hidden]\n[hidden]|n"; r.Code != 0 || r.Out != want {
		t.Errorf("partitions: code %d out %q err %q, want %q", r.Code, r.Out, r.Err, want)
	}
	if r := psql("SELECT upper(secret) FROM old_logins"); r.Code == 0 || !strings.Contains(r.Err, "the policy masks column") {
		t.Errorf("a value computed from a child table's masked column: code %d out %q err %q", r.Code, r.Out, r.Err)
	}
}

// TestFunctionResultsMasked: a function of the database returns what its
// code reads, under its own name or result column names, which PostgreSQL
// reports without a source. regate reads the definitions of the database's
// SQL and PL/pgSQL functions: one that returns a masked value may not be
// called where its result reaches the client (or another table), and its
// result columns that carry masked values under a name no mask matches may
// not be returned; one whose code regate cannot follow counts as returning
// any masked column. Functions that return no masked value work as before.
func TestFunctionResultsMasked(t *testing.T) {
	pg, iss, gw := setup(t)
	pg.Psql(t, "app", `
		CREATE FUNCTION get_email(p int) RETURNS text LANGUAGE sql STABLE
			AS 'SELECT email FROM customers WHERE id = p';
		CREATE FUNCTION wrap(p int) RETURNS text LANGUAGE sql STABLE AS 'SELECT upper(get_email(p))';
		CREATE FUNCTION contacts_fn() RETURNS TABLE (id int, contact text) LANGUAGE sql STABLE
			AS 'SELECT 1; SELECT id, email FROM customers';
		CREATE FUNCTION contacts_atomic() RETURNS TABLE (id int, contact text) LANGUAGE sql STABLE
			BEGIN ATOMIC SELECT c.id, c.email FROM customers c; END;
		CREATE FUNCTION pl_email(p int) RETURNS text LANGUAGE plpgsql STABLE AS $$
			DECLARE v text; BEGIN SELECT email INTO v FROM customers WHERE id = p; RETURN v; END $$;
		CREATE FUNCTION pl_contacts() RETURNS TABLE (id int, contact text) LANGUAGE plpgsql STABLE AS $$
			BEGIN RETURN QUERY SELECT c.id, c.email FROM customers c; END $$;
		CREATE FUNCTION dyn(col text) RETURNS SETOF text LANGUAGE plpgsql STABLE AS $$
			BEGIN RETURN QUERY EXECUTE 'SELECT ' || col || ' FROM customers'; END $$;
		CREATE PROCEDURE proc_email(p int, INOUT e text) LANGUAGE plpgsql AS $$
			BEGIN SELECT email INTO e FROM customers WHERE id = p; END $$;
		CREATE FUNCTION name_of(p int) RETURNS text LANGUAGE sql STABLE AS 'SELECT name FROM customers WHERE id = p';
		CREATE FUNCTION pl_count() RETURNS bigint LANGUAGE plpgsql STABLE AS $$
			BEGIN RETURN (SELECT count(*) FROM customers); END $$;
		CREATE FUNCTION search_customers(p text) RETURNS SETOF customers LANGUAGE sql STABLE
			AS 'SELECT * FROM customers WHERE name LIKE p';
		CREATE VIEW via_fn AS SELECT id, get_email(id) AS e FROM customers;
		GRANT SELECT ON via_fn TO app;`)
	tok := iss.Token(t, "agent-f", audience, "agents")
	psql := psqlAs(t, gw, "agent-f", tok)
	refused := map[string]string{
		"SELECT get_email(1)":                                     "through get_email(), a function of the database",
		"SELECT wrap(1)":                                          "through wrap(), a function of the database",
		"SELECT lower(pl_email(1))":                               "through pl_email()",
		"SELECT contact FROM contacts_fn()":                       "a result column of contacts_fn() in FROM",
		"SELECT * FROM contacts_atomic() WHERE id = 1":            "a result column of contacts_atomic() in FROM",
		"SELECT x.c FROM pl_contacts() AS x(i, c)":                "a result column of pl_contacts() in FROM",
		"SELECT x FROM get_email(2) AS f(x)":                      "a result column of get_email() in FROM",
		"SELECT dyn('email')":                                     "runs SQL it builds while it runs",
		"CALL proc_email(1, NULL)":                                "through proc_email()",
		"SELECT search_customers('A%')":                           "through search_customers()",
		"SELECT x FROM search_customers('A%') AS f(i, x, n)":      "a result column of search_customers() in FROM",
		"CREATE TABLE stash AS SELECT contact FROM contacts_fn()": "a result column of contacts_fn() in FROM",
	}
	for q, want := range refused {
		if r := psql(q); r.Code == 0 || !strings.Contains(r.Err, "the policy masks column") || !strings.Contains(r.Err, want) {
			t.Errorf("%s: code %d out %q err %q, want a refusal containing %q", q, r.Code, r.Out, r.Err, want)
		}
	}
	// In WHERE a call is not output, but PostgreSQL's error text could quote
	// the value: it is withheld.
	if r := psql("SELECT id FROM customers WHERE get_email(id)::int = 1"); r.Code == 0 ||
		!strings.Contains(r.Err, "withheld") || strings.Contains(r.Err, "@example.com") {
		t.Errorf("error text of a call in WHERE: code %d out %q err %q, want it withheld", r.Code, r.Out, r.Err)
	}
	// What carries no masked value, or carries it as a masked name, works.
	r := psql("SELECT name_of(1), pl_count()",
		"SELECT id FROM contacts_fn() ORDER BY id LIMIT 1",
		"SELECT count(*) FROM pl_contacts()",
		"SELECT id, email FROM search_customers('B%')",
		"SELECT id FROM customers WHERE get_email(id) LIKE 'cy@%'",
		"SELECT id, e FROM via_fn WHERE id = 1",
		"SELECT n FROM generate_series(1, 2) AS n")
	if want := "Ann|3\n1\n3\n2|b***@example.com\n3\n1|a***@example.com\n1\n2"; r.Code != 0 || r.Out != want {
		t.Errorf("allowed: code %d out %q err %q, want %q", r.Code, r.Out, r.Err, want)
	}
}

// TestWholeRowsOfUnmaskedTables: the check refuses * and whole rows where
// a masked value could be inside (into a new table, in an expression); for a
// table without masked columns, which regate reads from the catalog, they
// run. A column added through regate is seen at once.
func TestWholeRowsOfUnmaskedTables(t *testing.T) {
	pg, iss, gw := setup(t)
	pg.Psql(t, "app", `CREATE TABLE orders (id int, total int);
		INSERT INTO orders VALUES (1, 10), (2, 20);
		ALTER TABLE orders OWNER TO app;`)
	tok := iss.Token(t, "agent-w", audience, "agents")
	psql := psqlAs(t, gw, "agent-w", tok)
	r := psql("CREATE TABLE orders_copy AS SELECT * FROM orders",
		"INSERT INTO orders_copy SELECT * FROM orders WHERE id = 1",
		"SELECT row_to_json(o) FROM orders o WHERE id = 2",
		"SELECT count(*) FROM orders_copy")
	if want := "SELECT 2\nINSERT 0 1\n{\"id\":2,\"total\":20}\n3"; r.Code != 0 || r.Out != want {
		t.Errorf("whole rows of a table without masked columns: code %d out %q err %q, want %q", r.Code, r.Out, r.Err, want)
	}
	for _, q := range []string{"CREATE TABLE stash AS SELECT * FROM customers",
		"SELECT row_to_json(c) FROM customers c",
		"INSERT INTO orders_copy SELECT o.* FROM orders o JOIN customers c ON c.id = o.id"} {
		if r := psql(q); r.Code == 0 || !strings.Contains(r.Err, "the policy masks column") {
			t.Errorf("%s: code %d out %q err %q, want a refusal", q, r.Code, r.Out, r.Err)
		}
	}
	// The refusal names the masked columns * holds there, not every mask.
	if r := psql("CREATE TABLE stash AS SELECT * FROM customers"); !strings.Contains(r.Err, `column "email", which`) {
		t.Errorf("refusal of * from customers: %q, want it to name email alone", r.Err)
	}
	// The table gains a masked column through regate: the next statement
	// sees it.
	if r := psql("ALTER TABLE orders ADD COLUMN email text"); r.Code != 0 {
		t.Fatalf("alter: code %d err %q", r.Code, r.Err)
	}
	if r := psql("SELECT row_to_json(o) FROM orders o"); r.Code == 0 || !strings.Contains(r.Err, "the policy masks column") {
		t.Errorf("after ADD COLUMN email: code %d out %q err %q, want a refusal", r.Code, r.Out, r.Err)
	}
}

// TestQueryTextFunctionsUnderMasks: functions that run SQL given as text
// (tablefunc's crosstab, the XML functions) return what the statement does
// not name. The default library blocks them; under any policy with column
// masks regate refuses them, also written with a schema.
func TestQueryTextFunctionsUnderMasks(t *testing.T) {
	pg := testenv.StartPostgres(t)
	pg.Psql(t, "app", `CREATE EXTENSION tablefunc;
		CREATE TABLE customers (id int, email text);
		INSERT INTO customers VALUES (1, 'ann@example.com');
		ALTER TABLE customers OWNER TO app;`)
	crosstab := "SELECT * FROM crosstab('SELECT id, ''x'', email FROM customers ORDER BY 1') AS ct(id int, e text)"
	iss := testenv.StartIssuer(t)
	// The default library.
	gw := testenv.StartGateway(t, pg, testenv.GatewayOptions{Issuer: iss.URL(), Audience: audience})
	if r := psqlAs(t, gw, "agent-q", iss.Token(t, "agent-q", audience))(crosstab); r.Code == 0 ||
		!strings.Contains(r.Err, "crosstab() is not allowed: it runs a query") || strings.Contains(r.Out, "ann@") {
		t.Errorf("default library: code %d out %q err %q, want crosstab blocked", r.Code, r.Out, r.Err)
	}
	// A policy of one's own that allows everything and masks email.
	dir := t.TempDir()
	writeFile(t, dir, "policy.rego", `package regate

import rego.v1

decision := {"allow": true, "mask": [{"column": "email"}]}
`)
	gw2 := testenv.StartGateway(t, pg, testenv.GatewayOptions{Issuer: iss.URL(), Audience: audience, Bundle: dir})
	psql := psqlAs(t, gw2, "agent-q", iss.Token(t, "agent-q", audience))
	for _, q := range []string{crosstab,
		"SELECT pg_catalog.query_to_xml('SELECT email FROM customers', true, false, '')",
		"SELECT * FROM public.crosstab2('SELECT id::text, ''x'', email FROM customers')"} {
		if r := psql(q); r.Code == 0 || !strings.Contains(r.Err, "which runs a query or reads a table that is not in the statement") ||
			strings.Contains(r.Out, "ann@") {
			t.Errorf("%s: code %d out %q err %q, want a refusal", q, r.Code, r.Out, r.Err)
		}
	}
	if r := psql("SELECT email FROM customers"); r.Code != 0 || r.Out != "a***@example.com" {
		t.Errorf("masked select: code %d out %q err %q", r.Code, r.Out, r.Err)
	}
}

// TestStatisticsUnderMasks: PostgreSQL's statistics views hold sample values
// of every analyzed column (pg_stats.histogram_bounds lists the emails):
// under column masks they may not be returned; their other columns may.
func TestStatisticsUnderMasks(t *testing.T) {
	pg, iss, gw := setup(t)
	pg.Psql(t, "app", `ANALYZE customers`)
	psql := psqlAs(t, gw, "agent-s", iss.Token(t, "agent-s", audience))
	for _, q := range []string{
		"SELECT attname, histogram_bounds FROM pg_stats WHERE tablename = 'customers'",
		"SELECT * FROM pg_catalog.pg_stats WHERE tablename = 'customers'",
		"SELECT s.most_common_vals::text FROM pg_stats s",
		"SELECT b FROM pg_stats AS s(a, b, c, d, e, f, g, h, i, j, k, l, m, n)",
		"SELECT attname FROM pg_stats WHERE tablename = 'customers' AND histogram_bounds::text::int = 1",
	} {
		r := psql(q)
		if r.Code == 0 || strings.Contains(r.Out+r.Err, "@example.com") {
			t.Errorf("%s: code %d out %q err %q, want a refusal without the values", q, r.Code, r.Out, r.Err)
		}
	}
	if r := psql("SELECT histogram_bounds FROM pg_stats"); !strings.Contains(r.Err, "PostgreSQL's statistics") {
		t.Errorf("the refusal does not say why: %q", r.Err)
	}
	r := psql("SELECT attname, n_distinct FROM pg_stats WHERE tablename = 'customers' AND attname = 'email'")
	if r.Code != 0 || r.Out != "email|-1" {
		t.Errorf("counts: code %d out %q err %q", r.Code, r.Out, r.Err)
	}
}
