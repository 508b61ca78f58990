// Command relay is the benchmark's reference proxy: a plain byte relay, two
// io.Copy goroutines per connection, with no parsing, policy or recording.
// test/bench/run.sh runs pgbench through it next to regate, so that every
// run shows what any Go proxy in the data path costs on the machine at hand,
// and how far regate's own work is from that floor.
//
//	relay -listen 127.0.0.1:PORT -upstream 127.0.0.1:PGPORT
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
)

func main() {
	listen := flag.String("listen", "", "loopback address to listen on, host:port")
	upstream := flag.String("upstream", "", "address to relay every connection to, host:port")
	flag.Parse()
	if *listen == "" || *upstream == "" {
		fmt.Fprintln(os.Stderr, "relay: -listen and -upstream are required")
		os.Exit(2)
	}
	host, _, err := net.SplitHostPort(*listen)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		fmt.Fprintf(os.Stderr, "relay: -listen %q is not a loopback host:port (it has no TLS and no authentication)\n", *listen)
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		os.Exit(1)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "relay:", err)
			os.Exit(1)
		}
		go serve(c, *upstream)
	}
}

// serve copies bytes both ways until either side closes.
func serve(c net.Conn, upstream string) {
	defer c.Close()
	u, err := net.Dial("tcp", upstream)
	if err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		return
	}
	defer u.Close()
	go func() {
		io.Copy(u, c) //nolint:errcheck // the connection ends either way
		u.Close()
	}()
	io.Copy(c, u) //nolint:errcheck // the connection ends either way
}
