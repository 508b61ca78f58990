package postgres

import (
	"encoding/binary"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/regate/regate/policies/decision"
)

// fuzzMasker is a masker planned for a result of every kind of column the
// masker treats differently: a column-masked text, detector-scanned text,
// json (text), jsonb (binary), text[] (a container) and a binary int4.
func fuzzMasker(t testing.TB) *resultMasker {
	m, err := newResultMasker(decision.Decision{Mask: []decision.Mask{
		{Column: "email"}, {Detector: "credit_card"}, {Detector: "email"}, {Detector: "jwt"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	m.describe(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{
		{Name: []byte("email"), DataTypeOID: 25},
		{Name: []byte("notes"), DataTypeOID: 25},
		{Name: []byte("j"), DataTypeOID: oidJSON},
		{Name: []byte("b"), DataTypeOID: oidJSONB, Format: 1},
		{Name: []byte("tags"), DataTypeOID: 1009},
		{Name: []byte("n"), DataTypeOID: 23, Format: 1},
	}}, nil)
	return m
}

// dataRowColumns parses a DataRow body, or reports that it is malformed.
func dataRowColumns(body []byte) (int, bool) {
	if len(body) < 2 {
		return 0, false
	}
	n := int(binary.BigEndian.Uint16(body))
	pos := 2
	for range n {
		if pos+4 > len(body) {
			return 0, false
		}
		l := int(int32(binary.BigEndian.Uint32(body[pos:])))
		pos += 4
		if l > 0 {
			pos += l
		}
		if pos > len(body) {
			return 0, false
		}
	}
	return n, pos == len(body)
}

// FuzzMaskRows: whatever the target returns (a value of any bytes, a
// malformed DataRow, a COPY line) is masked or refused without a panic, and a
// masked DataRow is well formed with the same columns.
func FuzzMaskRows(f *testing.F) {
	for _, s := range []string{"", "ann@example.com", "4111 1111 1111 1111", `{"a":"4111-1111-1111-1111"}`,
		`{"x@y.io",NULL}`, "a\tb\\tc\\N\t\\N\n", `"q,""x@y.io""",,`, "\x00\x01\xff", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		m := fuzzMasker(t)
		// Arbitrary bytes as a DataRow: an error or a well-formed row.
		if out, err := m.row(v); err == nil {
			if n, ok := dataRowColumns(out); !ok || n != len(m.plan) {
				t.Fatalf("row(%q) = %q: malformed", v, out)
			}
		}
		// A well-formed row with v in every column (the int4 as 4 bytes).
		body := binary.BigEndian.AppendUint16(nil, uint16(len(m.plan)))
		for i := range m.plan {
			val := v
			if i == len(m.plan)-1 {
				val = []byte{0, 0, 0, 7}
			}
			body = appendValue(body, val)
		}
		out, err := m.row(body)
		if err != nil {
			t.Fatalf("well-formed row with %q: %v", v, err)
		}
		if n, ok := dataRowColumns(out); !ok || n != len(m.plan) {
			t.Fatalf("masked row of %q is malformed: %q", v, out)
		}
		// v as a COPY line, text and CSV, against the same columns.
		for _, c := range []copyOut{{delim: '\t', null: `\N`}, {csv: true, delim: ',', null: ""}} {
			cm := fuzzMasker(t)
			cm.copy = &c
			_, _ = cm.copyRow(v)
		}
	})
}
