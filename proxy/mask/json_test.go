package mask

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/regate/regate/policies/decision"
)

func decode(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func encode(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestJSON(t *testing.T) {
	const doc = `{"data":[{"email":"ann@example.com","name":"Ann","age":41,"ok":true,"tags":["x"],"none":null},
		{"email":"bob@example.org","name":"Bob","age":52,"ok":false,"tags":[],"none":null}],
		"a/b":"slash","m~n":"tilde","~1":"literal","note":"call +44 20 7946 0958 or mail c@d.io"}`
	cases := []struct {
		name string
		obs  []decision.Mask
		want string
		n    int
	}{
		{"pointer", []decision.Mask{{Field: "/data/0/email"}},
			`"data":[{"age":41,"email":"a***@example.com",`, 1},
		{"with", []decision.Mask{{Field: "/data/1/name", With: "[name]"}},
			`"name":"[name]"`, 1},
		{"escaped slash", []decision.Mask{{Field: "/a~1b"}}, `"a/b":"********"`, 1},
		{"escaped tilde", []decision.Mask{{Field: "/m~0n"}}, `"m~n":"********"`, 1},
		{"~01 is ~1", []decision.Mask{{Field: "/~01"}}, `"~1":"********"`, 1},
		{"wildcard array", []decision.Mask{{Field: "/data/*/email"}},
			`"email":"b***@example.org"`, 2},
		{"wildcard object", []decision.Mask{{Field: "/data/0/*", With: "-"}},
			`{"age":"-","email":"-","name":"-","none":"-","ok":"-","tags":"-"}`, 6},
		{"number becomes null", []decision.Mask{{Field: "/data/0/age"}}, `{"age":null,`, 1},
		{"bool becomes null", []decision.Mask{{Field: "/data/1/ok"}}, `"ok":null,`, 1},
		{"array becomes null", []decision.Mask{{Field: "/data/0/tags"}}, `"tags":null}`, 1},
		{"object becomes null", []decision.Mask{{Field: "/data/1"}}, `"none":null,"ok":true,"tags":["x"]},null]`, 1},
		{"null stays null", []decision.Mask{{Field: "/data/0/none"}}, `"none":null`, 0},
		{"null with with", []decision.Mask{{Field: "/data/0/none", With: "n/a"}}, `"none":"n/a"`, 1},
		{"same target twice", []decision.Mask{{Field: "/data/0/name"}, {Field: "/data/*/name", With: "X"}},
			`"name":"********"`, 2},
		{"missing member", []decision.Mask{{Field: "/data/0/phone"}}, `"data":[{"age":41,"email":"ann@example.com"`, 0},
		{"index out of range", []decision.Mask{{Field: "/data/2/email"}}, `"ann@example.com"`, 0},
		{"index -", []decision.Mask{{Field: "/data/-"}}, `"ann@example.com"`, 0},
		{"leading zero", []decision.Mask{{Field: "/data/00/email"}}, `"ann@example.com"`, 0},
		{"through a scalar", []decision.Mask{{Field: "/note/x"}}, `"note":"call`, 0},
		{"detectors everywhere", []decision.Mask{{Detector: "email"}, {Detector: "phone"}},
			`"note":"call +** ** **** **58 or mail c***@d.io"`, 4},
		{"field then detectors", []decision.Mask{{Field: "/note", With: "x@example.com"}, {Detector: "email"}},
			`"note":"x@example.com"`, 3},
		{"column ignored", []decision.Mask{{Column: "email"}}, `"ann@example.com"`, 0},
	}
	for _, c := range cases {
		got, n, err := JSON(decode(t, doc), c.obs)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if s := encode(t, got); !strings.Contains(s, c.want) || n != c.n {
			t.Errorf("%s: JSON = %s, %d; want it to contain %s, count %d", c.name, s, n, c.want, c.n)
		}
	}
}

func TestJSONErrors(t *testing.T) {
	for _, obs := range [][]decision.Mask{
		{{Field: "data/0"}},
		{{Field: "/a~2"}},
		{{Field: "/a~"}},
		{{Field: "/a"}, {Detector: "passport"}},
	} {
		doc := decode(t, `{"a":"ann@example.com","data":["x"]}`)
		got, n, err := JSON(doc, append([]decision.Mask{{Field: "/a"}}, obs...))
		if err == nil {
			t.Errorf("%v: no error", obs)
			continue
		}
		if n != 0 || encode(t, got) != `{"a":"ann@example.com","data":["x"]}` {
			t.Errorf("%v: document changed on error: %s", obs, encode(t, got))
		}
	}
}

func TestJSONScalarsAndOtherTypes(t *testing.T) {
	m := []decision.Mask{{Detector: "credit_card"}}
	got, n, err := JSON("4111111111111111", m)
	if err != nil || got != "************1111" || n != 1 {
		t.Fatalf("string document: %v %d %v", got, n, err)
	}
	got, n, err = JSON(json.Number("4111111111111111"), m)
	if err != nil || got != json.Number("4111111111111111") || n != 0 {
		t.Fatalf("numbers are not text: %v %d %v", got, n, err)
	}
	got, n, err = JSON(nil, []decision.Mask{{Field: "/a"}})
	if err != nil || got != nil || n != 0 {
		t.Fatalf("null document: %v %d %v", got, n, err)
	}
	doc := map[string]any{"n": json.Number("12"), "s": "x"}
	got, n, err = JSON(doc, []decision.Mask{{Field: "/n"}, {Field: "/s"}})
	if err != nil || n != 2 || encode(t, got) != `{"n":null,"s":"********"}` {
		t.Fatalf("json.Number target: %s %d %v", encode(t, got), n, err)
	}
}

func TestJSONWildcardNested(t *testing.T) {
	doc := decode(t, `{"users":{"u1":{"cards":["4111111111111111","x"]},"u2":{"cards":["5555555555554444"]}}}`)
	got, n, err := JSON(doc, []decision.Mask{{Field: "/users/*/cards/0"}})
	if err != nil || n != 2 {
		t.Fatal(n, err)
	}
	if s := encode(t, got); s != `{"users":{"u1":{"cards":["************1111","x"]},"u2":{"cards":["************4444"]}}}` {
		t.Fatal(s)
	}
}
