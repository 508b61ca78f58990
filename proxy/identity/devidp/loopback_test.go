package devidp

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestTokenRefusesNonLoopbackClients exercises the handler directly: over a
// real socket the listener is loopback-only, so no other peer can be had.
func TestTokenRefusesNonLoopbackClients(t *testing.T) {
	s, err := Start(context.Background(), "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h := s.routes()
	cases := []struct {
		remote, host string
		want         int
	}{
		{"10.1.2.3:5555", "127.0.0.1:1", http.StatusForbidden},
		{"[2001:db8::1]:5555", "127.0.0.1:1", http.StatusForbidden},
		{"garbage", "127.0.0.1:1", http.StatusForbidden},
		{"127.0.0.1:5555", "attacker.example:1", http.StatusForbidden},
		{"127.0.0.1:5555", "127.0.0.1:1", http.StatusOK},
		{"[::1]:5555", "localhost:1", http.StatusOK},
	}
	for _, tc := range cases {
		req := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader("sub=alice"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.RemoteAddr, req.Host = tc.remote, tc.host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("remote %s host %s: %d, want %d (%s)", tc.remote, tc.host, rec.Code, tc.want, rec.Body)
		}
	}
}
