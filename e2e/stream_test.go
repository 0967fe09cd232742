package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
)

const streamSize = 100 << 20

// pattern is a deterministic stream, so that both ends can check every byte
// without holding the whole of it.
type pattern struct{ n int64 }

func (p *pattern) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(p.n % 251)
		p.n++
	}
	return len(b), nil
}

// checkPattern reads r to the end and reports how many bytes matched the pattern.
func checkPattern(r io.Reader) (int64, error) {
	buf := make([]byte, 64<<10)
	var n int64
	for {
		k, err := r.Read(buf)
		for i := range k {
			if buf[i] != byte((n+int64(i))%251) {
				return n, fmt.Errorf("byte %d differs", n+int64(i))
			}
		}
		n += int64(k)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// peakRSS is the process's high-water resident set size, in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}

// TestStreams100MiBBothWays sends 100 MiB up and down through the proxy and
// checks every byte, while the proxy's peak memory grows by far less.
func TestStreams100MiBBothWays(t *testing.T) {
	e := newEnv(t)
	v := e.vendors["hgem"]
	v.sim.HandleAPI("GET /api/export", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		io.Copy(w, io.LimitReader(&pattern{}, streamSize))
	}))
	v.sim.HandleAPI("POST /api/import", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := checkPattern(r.Body)
		fmt.Fprintf(w, "%d %v", n, err)
	}))
	p := e.start(e.allUpstreams())
	p.ready(t)
	get(t, p.data+"/hgem/api/visits") // connections and buffers warm
	before := peakRSS(t, p.cmd.Process.Pid)

	resp, err := client.Get(p.data + "/hgem/api/export")
	if err != nil {
		t.Fatal(err)
	}
	n, err := checkPattern(resp.Body)
	resp.Body.Close()
	if err != nil || n != streamSize {
		t.Fatalf("download: %d bytes, %v", n, err)
	}

	req, _ := http.NewRequest("POST", p.data+"/hgem/api/import", io.LimitReader(&pattern{}, streamSize))
	req.ContentLength = streamSize
	up := must(client.Do(req))
	body, _ := io.ReadAll(up.Body)
	up.Body.Close()
	if want := fmt.Sprintf("%d <nil>", streamSize); string(body) != want {
		t.Fatalf("upload: the vendor got %q, want %q", body, want)
	}

	growth := peakRSS(t, p.cmd.Process.Pid) - before
	t.Logf("peak RSS grew by %.1f MiB while streaming 2 x 100 MiB", float64(growth)/(1<<20))
	if growth > 32<<20 {
		t.Fatalf("peak RSS grew by %d MiB: the proxy holds bodies instead of streaming them", growth>>20)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
