package postgres

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Protocol codes of the untyped startup-phase messages.
const (
	codeProtocol30  = 196608   // 3.0
	codeSSLRequest  = 80877103 // SSLRequest
	codeGSSENC      = 80877104 // GSSENCRequest
	codeCancel      = 80877102 // CancelRequest
	maxStartupBytes = 10000    // as Postgres itself
)

// frameReader reads typed protocol messages ('Q', len, body) into a reused
// buffer. The body is valid until the next call.
type frameReader struct {
	r       *bufio.Reader
	buf     []byte
	maxBody int
	hdr     [5]byte
}

// errTooLarge says a message announced a length above the configured limit.
type errTooLarge struct {
	typ  byte
	size int
	max  int
}

func (e *errTooLarge) Error() string {
	return fmt.Sprintf("message %q of %d bytes exceeds the limit of %d bytes", e.typ, e.size, e.max)
}

func (f *frameReader) next() (typ byte, body []byte, err error) {
	if _, err := io.ReadFull(f.r, f.hdr[:]); err != nil {
		return 0, nil, err
	}
	typ = f.hdr[0]
	n := int(int32(binary.BigEndian.Uint32(f.hdr[1:])))
	if n < 4 {
		return typ, nil, fmt.Errorf("message %q has an invalid length %d", typ, n)
	}
	n -= 4
	if n > f.maxBody {
		return typ, nil, &errTooLarge{typ: typ, size: n, max: f.maxBody}
	}
	if cap(f.buf) < n {
		f.buf = make([]byte, n)
	}
	body = f.buf[:n]
	if _, err := io.ReadFull(f.r, body); err != nil {
		return typ, nil, fmt.Errorf("message %q truncated: %w", typ, err)
	}
	return typ, body, nil
}

// writeFrame writes one typed message.
func writeFrame(w *bufio.Writer, typ byte, body []byte) error {
	var hdr [5]byte
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(body)+4))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.Write(body)
	return err
}

// writeMsg encodes and writes a pgproto3 message.
func writeMsg(w io.Writer, msgs ...pgproto3.Message) error {
	var buf []byte
	var err error
	for _, m := range msgs {
		if buf, err = m.Encode(buf); err != nil {
			return err
		}
	}
	_, err = w.Write(buf)
	return err
}

// readStartup reads one untyped startup-phase message: its code and body.
func readStartup(r io.Reader) (code uint32, body []byte, err error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := int(int32(binary.BigEndian.Uint32(hdr[:])))
	if n < 8 || n > maxStartupBytes {
		return 0, nil, fmt.Errorf("startup message has an invalid length %d", n)
	}
	body = make([]byte, n-4)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, fmt.Errorf("startup message truncated: %w", err)
	}
	return binary.BigEndian.Uint32(body[:4]), body, nil
}

// cstring returns the NUL-terminated string at the start of b.
func cstring(b []byte) (string, bool) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), true
		}
	}
	return "", false
}

// errorFields decodes the fields of an ErrorResponse or NoticeResponse body.
func errorFields(body []byte) (code, message string) {
	for len(body) > 1 {
		t := body[0]
		s, ok := cstring(body[1:])
		if !ok {
			break
		}
		switch t {
		case 'C':
			code = s
		case 'M':
			message = s
		}
		body = body[1+len(s)+1:]
	}
	return code, message
}

func fatal(code, msg string) *pgproto3.ErrorResponse {
	// pgproto3's "X body is invalid %s" ends in a space when it has no details.
	msg = strings.TrimSpace(msg)
	return &pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg}
}
