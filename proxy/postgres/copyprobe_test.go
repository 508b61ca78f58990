package postgres

import (
	"strings"
	"testing"

	"github.com/regate/regate/parse/sql"
)

// TestProbeText finds the text of a COPY's query in the query string: the one
// that parses to the COPY's query exactly, whatever parentheses surround it
// (comments, literals, options), and nothing when the COPY is not alone or a
// client's batch is open.
func TestProbeText(t *testing.T) {
	p := sql.NewParser(64)
	cn := &conn{s: &Server{cfg: Config{Parser: p}}}
	for _, c := range []struct{ q, want string }{
		{"COPY (SELECT c.email FROM customers c JOIN orders o ON o.cid = c.id) TO STDOUT",
			"SELECT c.email FROM customers c JOIN orders o ON o.cid = c.id"},
		{"COPY (SELECT email FROM t WHERE name = ')' AND id IN (1, 2)) TO STDOUT WITH (FORMAT csv, FORCE_QUOTE (email))",
			"SELECT email FROM t WHERE name = ')' AND id IN (1, 2)"},
		{"copy /* ( */ (select (email) from (select email from t) s -- )\n) to stdout",
			"select (email) from (select email from t) s -- )\n"},
		{"COPY ((SELECT email FROM t) UNION (SELECT email FROM u)) TO STDOUT",
			"(SELECT email FROM t) UNION (SELECT email FROM u)"},
	} {
		stmts, err := p.Parse(c.q)
		if err != nil {
			t.Fatalf("%s: %v", c.q, err)
		}
		q := child(stmts[0].AST, "CopyStmt")["query"].(map[string]any)
		got, ok := cn.probeText(c.q, 1, q)
		if !ok || strings.TrimLeft(got, " ") != c.want || len(got) != strings.Index(c.q, c.want)+len(c.want) {
			t.Errorf("%s:\n got %q, %v\nwant %q at offset %d", c.q, got, ok, c.want, strings.Index(c.q, c.want))
		}
		if _, ok := cn.probeText(c.q, 2, q); ok {
			t.Errorf("%s: probed next to another statement", c.q)
		}
		if _, ok := cn.probeText("", 1, q); ok {
			t.Errorf("%s: probed in the extended protocol", c.q)
		}
	}
	// A query string over probeMaxQuery: no probe (its search would parse
	// it up to probeStarts×probeEnds times).
	long := "COPY (SELECT email /*" + strings.Repeat("x", probeMaxQuery) + "*/ FROM t JOIN u USING (id)) TO STDOUT"
	if stmts, err := p.Parse(long); err != nil {
		t.Fatal(err)
	} else if _, ok := cn.probeText(long, 1, child(stmts[0].AST, "CopyStmt")["query"].(map[string]any)); ok {
		t.Error("probed a query string over probeMaxQuery")
	}
	// A batch of the client's without its Sync yet: no probe.
	q := "COPY (SELECT email FROM t JOIN u USING (id)) TO STDOUT"
	stmts, _ := p.Parse(q)
	copyQuery := child(stmts[0].AST, "CopyStmt")["query"].(map[string]any)
	cn.queue = []*item{{kind: itemParse}}
	if _, ok := cn.probeText(q, 1, copyQuery); ok {
		t.Error("probed with a client's batch open")
	}
	cn.queue = append(cn.queue, &item{kind: itemSync})
	if _, ok := cn.probeText(q, 1, copyQuery); !ok {
		t.Error("not probed after the client's batch was closed by its Sync")
	}
	cn.queue, cn.discarding = nil, true
	if _, ok := cn.probeText(q, 1, copyQuery); ok {
		t.Error("probed while discarding a refused batch")
	}
}
