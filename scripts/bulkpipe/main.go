// bulkpipe: a bulk TCP sender and sink for timing a proxy on one long transfer.
//   bulkpipe -mode sink -addr 127.0.0.1:P        accept connections, read to the end, answer the byte count, close
//   bulkpipe -addr 127.0.0.1:P -bytes N [-c C]   C connections send N bytes in total, then half-close and wait
//                                                for the sink's close; prints "bytes N seconds S MBps R"
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

func main() {
	mode := flag.String("mode", "send", "send or sink")
	addr := flag.String("addr", "127.0.0.1:9000", "address")
	total := flag.Int64("bytes", 2<<30, "bytes to send in total")
	conns := flag.Int("c", 1, "connections")
	flag.Parse()
	if *mode == "sink" {
		ln, err := net.Listen("tcp", *addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				n, _ := io.Copy(io.Discard, c)
				fmt.Fprintf(c, "%d\n", n) // the count travels back so the sender can check it
				c.Close()
			}(c)
		}
	}
	buf := make([]byte, 256<<10)
	for i := range buf {
		buf[i] = byte(i)
	}
	per := *total / int64(*conns)
	var wg sync.WaitGroup
	failed := false
	start := time.Now()
	for i := 0; i < *conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", *addr)
			if err != nil {
				failed = true
				return
			}
			defer c.Close()
			for left := per; left > 0; {
				n := int64(len(buf))
				if left < n {
					n = left
				}
				if _, err := c.Write(buf[:n]); err != nil {
					failed = true
					return
				}
				left -= n
			}
			c.(*net.TCPConn).CloseWrite()
			var got int64
			if _, err := fmt.Fscan(c, &got); err != nil || got != per {
				fmt.Fprintf(os.Stderr, "sink counted %d of %d bytes (%v)\n", got, per, err)
				failed = true
			}
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	if failed {
		fmt.Fprintln(os.Stderr, "a connection failed")
		os.Exit(1)
	}
	fmt.Printf("bytes %d seconds %.3f MBps %.0f\n", per*int64(*conns), secs, float64(per*int64(*conns))/secs/1e6)
}
