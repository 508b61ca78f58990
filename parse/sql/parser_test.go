package sql

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	pgparser "github.com/pganalyze/pg_query_go/v6/parser"

	"github.com/regate/regate/parse"
)

// want is the expected outcome for one statement. rels and funcs are compared
// exactly (nil means none); ast maps dotted paths into the AST (list indexes
// as numbers) to expected values.
type want struct {
	command string
	node    string
	rels    []parse.Relation
	where   bool
	funcs   []string
	ast     map[string]any
}

type parseCase struct {
	name  string
	query string
	want  []want
	err   []string // substrings the error must contain; nil means no error
}

func rd(schema, name string) parse.Relation {
	return parse.Relation{Schema: schema, Name: name, Access: parse.AccessRead}
}
func wr(schema, name string) parse.Relation {
	return parse.Relation{Schema: schema, Name: name, Access: parse.AccessWrite}
}
func ddl(schema, name string) parse.Relation {
	return parse.Relation{Schema: schema, Name: name, Access: parse.AccessDDL}
}

func rels(r ...parse.Relation) []parse.Relation { return r }
func funcs(f ...string) []string                { return f }

func TestParse(t *testing.T) {
	p := NewParser(0)
	for _, tc := range parseCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := p.Parse(tc.query)
			if tc.err != nil {
				if err == nil {
					t.Fatalf("Parse(%q) succeeded, want an error", tc.query)
				}
				for _, s := range tc.err {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not contain %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.query, err)
			}
			checkStatements(t, got, tc.want)
		})
	}
}

func checkStatements(t *testing.T, got []parse.Statement, wants []want) {
	t.Helper()
	if got == nil {
		t.Fatal("Parse returned a nil slice")
	}
	if len(got) != len(wants) {
		t.Fatalf("got %d statements, want %d: %+v", len(got), len(wants), got)
	}
	for i, w := range wants {
		s := got[i]
		if s.Command != w.command || s.Node != w.node {
			t.Errorf("statement %d: command/node = %q/%q, want %q/%q", i, s.Command, s.Node, w.command, w.node)
		}
		if s.Relations == nil || s.Functions == nil {
			t.Errorf("statement %d: nil Relations or Functions", i)
		}
		if !equalOrEmpty(s.Relations, w.rels) {
			t.Errorf("statement %d: relations = %+v, want %+v", i, s.Relations, w.rels)
		}
		if !equalOrEmpty(s.Functions, w.funcs) {
			t.Errorf("statement %d: functions = %q, want %q", i, s.Functions, w.funcs)
		}
		if s.HasWhere != w.where {
			t.Errorf("statement %d: has_where = %v, want %v", i, s.HasWhere, w.where)
		}
		if _, ok := s.AST[s.Node]; !ok || len(s.AST) != 1 {
			t.Errorf("statement %d: AST is not {%q: …}: %v", i, s.Node, s.AST)
		}
		for path, v := range w.ast {
			if g, ok := astPath(s.AST, path); !ok || !reflect.DeepEqual(g, v) {
				t.Errorf("statement %d: AST %s = %#v (present %v), want %#v", i, path, g, ok, v)
			}
		}
	}
}

func equalOrEmpty[T any](got, want []T) bool {
	if len(got) == 0 && len(want) == 0 {
		return true
	}
	return reflect.DeepEqual(got, want)
}

// astPath follows a dotted path ("CopyStmt.relation.relname",
// "GrantStmt.objects.0.RangeVar.relname") into a decoded JSON value.
func astPath(v any, path string) (any, bool) {
	for _, key := range strings.Split(path, ".") {
		switch node := v.(type) {
		case map[string]any:
			next, ok := node[key]
			if !ok {
				return nil, false
			}
			v = next
		case []any:
			i, err := strconv.Atoi(key)
			if err != nil || i < 0 || i >= len(node) {
				return nil, false
			}
			v = node[i]
		default:
			return nil, false
		}
	}
	return v, true
}

func TestParseErrorDetails(t *testing.T) {
	_, err := NewParser(1).Parse("SELECT * FROMM t")
	if err == nil {
		t.Fatal("no error")
	}
	want := `cannot parse SQL: syntax error at or near "FROMM" at position 10`
	if err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
	var pe *pgparser.Error
	if !errors.As(err, &pe) || pe.Cursorpos != 10 {
		t.Errorf("error does not wrap the pg_query error: %#v", err)
	}
}

func TestParseCache(t *testing.T) {
	p := NewParser(2)
	a1, err := p.Parse("SELECT * FROM a")
	if err != nil {
		t.Fatal(err)
	}
	a2, _ := p.Parse("SELECT * FROM a")
	if &a1[0] != &a2[0] {
		t.Error("second Parse of the same text did not come from the cache")
	}
	if _, err := p.Parse("SELECT * FROM nope WHERE"); err == nil {
		t.Error("want an error")
	}
	p.Parse("SELECT * FROM b")
	p.Parse("SELECT * FROM a") // a is now the most recently used
	p.Parse("SELECT * FROM c") // evicts b
	if n := p.cache.len(); n != 2 {
		t.Errorf("cache holds %d entries, want 2", n)
	}
	if _, ok := p.cache.get("SELECT * FROM b"); ok {
		t.Error("least recently used entry was not evicted")
	}
	if _, ok := p.cache.get("SELECT * FROM a"); !ok {
		t.Error("recently used entry was evicted")
	}
	big := "SELECT 1 /*" + strings.Repeat("x", maxCachedQueryLen) + "*/"
	if _, err := p.Parse(big); err != nil {
		t.Fatal(err)
	}
	if _, ok := p.cache.get(big); ok {
		t.Error("oversized query text was cached")
	}
	if NewParser(0).cache.size != DefaultCacheSize || NewParser(-3).cache.size != DefaultCacheSize {
		t.Error("cacheSize <= 0 does not give the default size")
	}
}

func TestParseConcurrent(t *testing.T) {
	p := NewParser(8)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				q := fmt.Sprintf("DELETE FROM t%d WHERE id = %d", (g+i)%16, i%3)
				stmts, err := p.Parse(q)
				if err != nil {
					errs <- err
					return
				}
				if len(stmts) != 1 || stmts[0].Relations[0].Name != fmt.Sprintf("t%d", (g+i)%16) {
					errs <- fmt.Errorf("%q parsed to %+v", q, stmts)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestCommand(t *testing.T) {
	for node, c := range commands {
		if c == "" || strings.ToUpper(c) != c {
			t.Errorf("commands[%q] = %q", node, c)
		}
	}
	for node, want := range map[string]string{
		"FooBarStmt":       "FOOBAR",
		"CreateWidgetStmt": "CREATE",
		"AlterWidgetStmt":  "ALTER",
		"DropWidgetStmt":   "DROP",
		"Stmt":             "UNKNOWN",
	} {
		if got := command(node, map[string]any{}); got != want {
			t.Errorf("command(%q) = %q, want %q", node, got, want)
		}
	}
	kinds := map[string]string{"TRANS_STMT_ROLLBACK_PREPARED": "ROLLBACK PREPARED", "TRANS_STMT_NEW": "TRANSACTION"}
	for kind, want := range kinds {
		if got := command("TransactionStmt", map[string]any{"kind": kind}); got != want {
			t.Errorf("TransactionStmt %s = %q, want %q", kind, got, want)
		}
	}
}
