package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestDevCurlLinesWork runs `tokenproxy dev` and every curl line it prints,
// as printed (parsed the way a shell would, sent with Go's client).
func TestDevCurlLinesWork(t *testing.T) {
	e := &env{t: t, dir: t.TempDir()}
	p := e.startArgs("dev", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0")
	var lines []string
	waitFor(t, 10*time.Second, "the curl lines", func() bool {
		lines = nil
		for _, l := range strings.Split(p.out.String(), "\n") {
			if l = strings.TrimSpace(l); strings.HasPrefix(l, "curl ") {
				lines = append(lines, l)
			}
		}
		return len(lines) >= 6
	})
	p.ready(t)
	vendors := 0
	for _, line := range lines {
		line, _, _ = strings.Cut(line, "#")
		req := curlRequest(t, strings.TrimSpace(line))
		resp := do(t, req.method, req.url, strings.NewReader(req.data), req.header...)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s\n=> %d %s", line, resp.StatusCode, resp.body)
		}
		if strings.Contains(req.url, p.data) {
			vendors++
		}
	}
	if vendors != 4 {
		t.Errorf("%d curl lines go through the data plane, want one per vendor", vendors)
	}
}

type curlReq struct {
	method, url, data string
	header            []string
}

// curlRequest understands the curl options tokenproxy dev prints.
func curlRequest(t *testing.T, line string) curlReq {
	words := shellWords(line)[1:]
	r := curlReq{method: "GET"}
	for i := 0; i < len(words); i++ {
		switch w := words[i]; w {
		case "-s":
		case "-X":
			i++
			r.method = words[i]
		case "-H":
			i++
			k, v, _ := strings.Cut(words[i], ":")
			r.header = append(r.header, k, strings.TrimSpace(v))
		case "-d":
			i++
			r.data = words[i]
			if r.method == "GET" {
				r.method = "POST"
			}
		default:
			if strings.HasPrefix(w, "-") {
				t.Fatalf("unknown curl option %s in %q", w, line)
			}
			r.url = w
		}
	}
	return r
}

// shellWords splits a line as sh would for unquoted words and single quotes.
func shellWords(s string) []string {
	var words []string
	var cur strings.Builder
	in, quoted := false, false
	for _, c := range s {
		switch {
		case c == '\'':
			quoted, in = !quoted, true
		case c == ' ' && !quoted:
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(c)
			in = true
		}
	}
	if in {
		words = append(words, cur.String())
	}
	return words
}
