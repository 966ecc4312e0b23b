// Command labnet joins a pod's network namespace to the host's loopback
// without any address outside 127.0.0.0/8: each pod of the lab runs in its own
// network namespace (only "lo"), as a pod does, so that the ports Istio's
// config binds (0.0.0.0:15001, :15006, :15090, :15021, the agent's :15020)
// do not collide between pods or with anything else on the machine. A TCP
// stream crosses from one namespace to the other through a unix socket,
// which both see in the file system.
//
//	labnet forward LISTEN TARGET
//
// LISTEN and TARGET are tcp:HOST:PORT or unix:PATH. Run one side in the host
// namespace (unix -> tcp) and the other inside the pod's namespace
// (tcp -> unix).
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
)

func main() {
	if len(os.Args) != 4 || os.Args[1] != "forward" {
		fmt.Fprintln(os.Stderr, "usage: labnet forward LISTEN TARGET   (tcp:HOST:PORT or unix:PATH)")
		os.Exit(2)
	}
	lnet, laddr := split(os.Args[2])
	tnet, taddr := split(os.Args[3])
	if lnet == "unix" {
		_ = os.Remove(laddr)
	}
	l, err := net.Listen(lnet, laddr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "labnet:", err)
		os.Exit(1)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "labnet:", err)
			os.Exit(1)
		}
		go func() {
			defer c.Close()
			u, err := net.Dial(tnet, taddr)
			if err != nil {
				fmt.Fprintln(os.Stderr, "labnet:", err)
				return
			}
			defer u.Close()
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(u, c); closeWrite(u); done <- struct{}{} }()
			go func() { _, _ = io.Copy(c, u); closeWrite(c); done <- struct{}{} }()
			<-done
			<-done
		}()
	}
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

func split(s string) (string, string) {
	n, a, ok := strings.Cut(s, ":")
	if !ok || (n != "tcp" && n != "unix") {
		fmt.Fprintf(os.Stderr, "labnet: %q: want tcp:HOST:PORT or unix:PATH\n", s)
		os.Exit(2)
	}
	return n, a
}
