package recorder

import (
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/regate/regate/parse"
	"github.com/regate/regate/policies/decision"
)

// appendTemplate writes the template of the events a gateway records for
// every statement (a command, with its canonical input and decision, and an
// outcome) without reflection: byte for byte what json.Marshal writes for ev
// with Seq 0 and PrevHash "" (TestFastTemplate and FuzzFastTemplate compare
// the two). It reports false for any other event, which Encode then gives to
// json.Marshal.
func appendTemplate(dst []byte, ev *Event) ([]byte, bool) {
	if ev.Session != nil || ev.Approval != nil || (len(ev.Input) > 0 && !ev.canonicalInput()) {
		return dst, false
	}
	if y := ev.Time.Year(); y < 0 || y > 9999 {
		return dst, false // json.Marshal fails on these; let it say so
	}
	dst = append(dst, `{"seq":0,"id":`...)
	dst = parse.AppendJSONString(dst, ev.ID)
	dst = append(dst, `,"time":"`...)
	dst = ev.Time.AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","type":`...)
	dst = parse.AppendJSONString(dst, ev.Type)
	dst = append(dst, `,"session_id":`...)
	dst = parse.AppendJSONString(dst, ev.SessionID)
	dst = appendOptStr(dst, `,"protocol":`, ev.Protocol)
	dst = appendOptStr(dst, `,"target":`, ev.Target)
	dst = appendOptStr(dst, `,"subject":`, ev.Subject)
	dst = appendOptStr(dst, `,"ref":`, ev.Ref)
	if len(ev.Input) > 0 {
		dst = append(dst, `,"input":`...)
		dst = append(dst, ev.Input...)
	}
	if d := ev.Decision; d != nil {
		var ok bool
		if dst, ok = appendDecision(append(dst, `,"decision":`...), d); !ok {
			return dst, false
		}
	}
	if o := ev.Outcome; o != nil {
		dst = append(dst, `,"outcome":{"status":`...)
		dst = parse.AppendJSONString(dst, o.Status)
		if len(o.Tags) > 0 {
			dst = parse.AppendJSONStrings(append(dst, `,"tags":`...), o.Tags)
		}
		if o.Rows != 0 {
			dst = strconv.AppendInt(append(dst, `,"rows":`...), o.Rows, 10)
		}
		dst = appendOptStr(dst, `,"error":`, o.Error)
		dst = appendOptStr(dst, `,"code":`, o.Code)
		if len(o.Masked) > 0 {
			dst = append(dst, `,"masked":{`...)
			for i, k := range slices.Sorted(maps.Keys(o.Masked)) {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = append(parse.AppendJSONString(dst, k), ':')
				dst = strconv.AppendInt(dst, o.Masked[k], 10)
			}
			dst = append(dst, '}')
		}
		dst = append(dst, '}')
	}
	return append(dst, `,"prev_hash":""}`...), true
}

func appendDecision(dst []byte, d *decision.Decision) ([]byte, bool) {
	dst = append(dst, `{"decision_id":`...)
	dst = parse.AppendJSONString(dst, d.ID)
	dst = append(dst, `,"path":`...)
	dst = parse.AppendJSONString(dst, d.Path)
	dst = strconv.AppendBool(append(dst, `,"allow":`...), d.Allow)
	if len(d.Reasons) > 0 {
		dst = parse.AppendJSONStrings(append(dst, `,"reasons":`...), d.Reasons)
	}
	if a := d.Approval; a != nil {
		dst = parse.AppendJSONStrings(append(dst, `,"approval":{"groups":`...), a.Groups)
		dst = append(appendOptStr(dst, `,"reason":`, a.Reason), '}')
	}
	if len(d.Mask) > 0 {
		dst = append(dst, `,"mask":[`...)
		for i, m := range d.Mask {
			if i > 0 {
				dst = append(dst, ',')
			}
			n := len(dst)
			dst = appendOptStr(dst, `,"column":`, m.Column)
			dst = appendOptStr(dst, `,"field":`, m.Field)
			dst = appendOptStr(dst, `,"detector":`, m.Detector)
			dst = appendOptStr(dst, `,"with":`, m.With)
			if len(dst) > n {
				dst[n] = '{' // the first member's comma
			} else {
				dst = append(dst, '{')
			}
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	if d.Result != nil {
		raw := d.RawResult
		if raw == nil {
			var err error
			if raw, err = json.Marshal(d.Result); err != nil {
				return dst, false
			}
		}
		dst = append(append(dst, `,"result":`...), raw...)
	}
	if len(d.Bundles) > 0 {
		dst = append(dst, `,"bundles":{`...)
		for i, name := range slices.Sorted(maps.Keys(d.Bundles)) {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(parse.AppendJSONString(dst, name), `:{"revision":`...)
			dst = append(parse.AppendJSONString(dst, d.Bundles[name].Revision), '}')
		}
		dst = append(dst, '}')
	}
	dst = appendOptStr(dst, `,"error":`, d.Error)
	return append(dst, '}'), true
}

func appendOptStr(dst []byte, key, s string) []byte {
	if s == "" {
		return dst
	}
	return parse.AppendJSONString(append(dst, key...), s)
}
