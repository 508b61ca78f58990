package main

import "testing"

func TestListenNetwork(t *testing.T) {
	for addr, want := range map[string]string{
		"0.0.0.0:6432":   "tcp4",
		"127.0.0.1:6432": "tcp4",
		"[::]:6432":      "tcp6",
		"[::1]:6432":     "tcp6",
		"localhost:6432": "tcp",
		":6432":          "tcp",
	} {
		if got := listenNetwork(addr); got != want {
			t.Errorf("listenNetwork(%q) = %q, want %q", addr, got, want)
		}
	}
}
