package testenv

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// EnableTLS turns on ssl in the running server with the certificate of f
// (server.crt/server.key in the data directory, the key mode 0600 and owned
// by the server's user) and reloads it. With sslOnly, pg_hba refuses every
// TCP connection that is not TLS ("hostnossl … reject" first); the unix
// socket Psql uses is unaffected.
func (p *Postgres) EnableTLS(t testing.TB, f *TLSFiles, sslOnly bool) {
	t.Helper()
	asPG := os.Geteuid() == 0
	for name, b := range map[string][]byte{"server.crt": f.CertPEM, "server.key": f.KeyPEM} {
		path := filepath.Join(p.Dir, name)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if asPG {
			chown(t, path)
		}
	}
	if sslOnly {
		hba := filepath.Join(p.Dir, "pg_hba.conf")
		old, err := os.ReadFile(hba)
		if err != nil {
			t.Fatal(err)
		}
		rules := "hostnossl all all 0.0.0.0/0 reject\nhostnossl all all ::/0 reject\n"
		if err := os.WriteFile(hba, append([]byte(rules), old...), 0o600); err != nil {
			t.Fatal(err)
		}
		if asPG {
			chown(t, hba)
		}
	}
	p.Psql(t, "postgres", "ALTER SYSTEM SET ssl = on")
	p.Psql(t, "postgres", "SELECT pg_reload_conf()")
	// The reload is asynchronous; wait for it to take effect.
	for i := 0; i < 100; i++ {
		if p.Psql(t, "postgres", "SHOW ssl") == "on" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("ssl did not turn on after a reload (see the server log)")
}
