// Command netecho is a tiny UDP and TCP echo server and prober for the
// network tests: busybox has no UDP server whose answers a test can trust.
// Tests build it static (CGO_ENABLED=0) and put it into a test image.
//
//	netecho serve tcp:7000 udp:5353 ...      echo on each address until killed
//	netecho probe udp|tcp HOST:PORT [tries]  exit 0 if an echo came back, else 1
//	netecho hold HOST:PORT SECONDS           one TCP connection, a token echoed every 100 ms: exit 0 if none was lost
//	netecho sink tcp:PORT                    read and discard (throughput benchmarks)
//	netecho send HOST:PORT SECONDS           write as fast as possible, print bytes/s
package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "serve", "sink":
		for _, a := range os.Args[2:] {
			proto, addr, ok := strings.Cut(a, ":")
			if !ok {
				usage()
			}
			addr = ":" + addr
			switch proto {
			case "udp":
				go serveUDP(addr)
			case "tcp":
				go serveTCP(addr, os.Args[1] == "sink")
			default:
				usage()
			}
		}
		// As pid 1 a SIGTERM would be ignored without a handler, and every
		// stop would wait for SIGKILL.
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
		<-c
	case "probe":
		if len(os.Args) < 4 {
			usage()
		}
		tries := 3
		if len(os.Args) > 4 {
			tries, _ = strconv.Atoi(os.Args[4])
		}
		for i := range tries {
			if err := probe(os.Args[2], os.Args[3]); err == nil {
				fmt.Println("echoed")
				os.Exit(0)
			} else if i == tries-1 {
				fmt.Println(err)
			}
			time.Sleep(300 * time.Millisecond)
		}
		os.Exit(1)
	case "hold":
		if len(os.Args) < 4 {
			usage()
		}
		secs, _ := strconv.Atoi(os.Args[3])
		if err := hold(os.Args[2], time.Duration(secs)*time.Second); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println("held")
	case "send":
		if len(os.Args) < 4 {
			usage()
		}
		secs, _ := strconv.Atoi(os.Args[3])
		send(os.Args[2], time.Duration(secs)*time.Second)
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: netecho serve|sink proto:port... | probe udp|tcp host:port [tries] | send host:port seconds")
	os.Exit(2)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(2)
}

func serveUDP(addr string) {
	pc, err := net.ListenPacket("udp4", addr)
	if err != nil {
		fatal(err)
	}
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			continue
		}
		pc.WriteTo(buf[:n], from)
	}
}

func serveTCP(addr string, sink bool) {
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		fatal(err)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			continue
		}
		go func() {
			defer c.Close()
			if sink {
				io.Copy(io.Discard, c)
			} else {
				io.Copy(c, c)
			}
		}()
	}
}

// probe sends a random token and waits up to 2 s for it to come back.
func probe(proto, addr string) error {
	c, err := net.DialTimeout(proto+"4", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	b := make([]byte, 8)
	rand.Read(b)
	token := hex.EncodeToString(b)
	if _, err := c.Write([]byte(token)); err != nil {
		return err
	}
	got := make([]byte, len(token))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != token {
		return fmt.Errorf("echo %q, sent %q", got, token)
	}
	return nil
}

func send(addr string, d time.Duration) {
	c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
	if err != nil {
		fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 128<<10)
	var total int64
	start := time.Now()
	for time.Since(start) < d {
		n, err := c.Write(buf)
		total += int64(n)
		if err != nil {
			fatal(err)
		}
	}
	fmt.Printf("%d bytes/s\n", int64(float64(total)/time.Since(start).Seconds()))
}

// hold keeps one connection for d, checking an echo every 100 ms: a
// firewall change that broke established flows would stall or reset it.
func hold(addr string, d time.Duration) error {
	var c net.Conn
	var err error
	for range 10 { // the server may still be starting
		if c, err = net.DialTimeout("tcp4", addr, 2*time.Second); err == nil {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Println("connected")
	got := make([]byte, 16)
	for start := time.Now(); time.Since(start) < d; time.Sleep(100 * time.Millisecond) {
		c.SetDeadline(time.Now().Add(time.Second))
		b := make([]byte, 8)
		rand.Read(b)
		token := hex.EncodeToString(b)
		if _, err := c.Write([]byte(token)); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, got); err != nil {
			return fmt.Errorf("after %s: %w", time.Since(start).Round(time.Millisecond), err)
		}
		if string(got) != token {
			return fmt.Errorf("echo %q, sent %q", got, token)
		}
	}
	return nil
}
