package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tokenproxy/tokenproxy/internal/vendorsim"
)

// screenshot, when set, is where TestStatusPageInABrowser keeps its
// screenshot (docs/status-page.png is made with
// `go test ./e2e -run TestStatusPageInABrowser -args -screenshot ../docs/status-page.png`).
var screenshot = flag.String("screenshot", "", "write the status page's screenshot to this PNG file")

// browser starts Debian's headless Chromium through the DevTools protocol
// (chromedp), with the flags this machine needs (no sandbox as root; no
// background networking, which the closed network refuses) and a fresh
// profile. Without chromium the test fails: scripts/test.sh installs it.
func browser(t *testing.T, width, height int) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("no chromium on PATH (scripts/test.sh installs Debian's chromium): %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("hide-scrollbars", false),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(width, height),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(alloc)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// rendered is what a person sees of the status page, read from the
// browser after layout.
type rendered struct {
	Verdict      string         `json:"verdict"`
	Text         string         `json:"text"`
	ScrollWidth  int            `json:"scrollWidth"`
	ClientWidth  int            `json:"clientWidth"`
	Marks        map[string]int `json:"marks"` // "<upstream> <kind>" -> marks drawn
	TimelineW    map[string]int `json:"timelineWidth"`
	Titles       []string       `json:"titles"` // the marks' tooltips
	Refresh      string         `json:"refresh"`
	Scripts      int            `json:"scripts"`   // script, img, stylesheet links, iframes
	Resources    []string       `json:"resources"` // everything fetched besides the page
	ProblemCount int            `json:"problems"`
}

const readPage = `(() => {
  const se = document.scrollingElement;
  const marks = {}, widths = {}, titles = [];
  for (const up of document.querySelectorAll("section.up")) {
    const name = up.id.replace(/^up-/, "");
    const svg = up.querySelector("svg.timeline");
    if (!svg) continue;
    widths[name] = Math.round(svg.getBoundingClientRect().width);
    for (const el of svg.querySelectorAll(".ev, .backoff, .tok")) {
      const kind = el.classList.contains("ev") ? [...el.classList].find(c => c.startsWith("ev-")).slice(3) : el.getAttribute("class");
      marks[name + " " + kind] = (marks[name + " " + kind] || 0) + 1;
      const title = el.querySelector("title");
      if (title) titles.push(name + ": " + title.textContent);
    }
  }
  const meta = document.querySelector('meta[http-equiv="refresh"]');
  return {
    verdict: document.querySelector("#verdict h1").innerText,
    text: document.body.innerText,
    scrollWidth: se.scrollWidth, clientWidth: se.clientWidth,
    marks, timelineWidth: widths, titles,
    refresh: meta ? meta.content : "",
    scripts: document.querySelectorAll("script, img, iframe, link[rel=stylesheet]").length,
    resources: performance.getEntriesByType("resource").map(e => e.name),
    problems: document.querySelectorAll(".problem").length,
  };
})()`

// TestStatusPageInABrowser loads /status in headless Chromium at 1200 px
// with one upstream refusing its credentials, and checks what is rendered:
// the verdict first, the refusal shown once, each upstream's timeline with
// its events, no horizontal scroll, nothing fetched besides the page, and
// the page reloading by itself.
func TestStatusPageInABrowser(t *testing.T) {
	e := newEnv(t)
	const refusal = "Invalid credentials for client tokenproxy-e2e"
	e.vendors["prominsight"].sim.SetTokenFault(&vendorsim.Fault{Status: 401,
		Body: `{"success":false,"error":"` + refusal + `"}`})
	p := e.start(e.allUpstreams())
	waitFor(t, 20*time.Second, "three upstreams ready and prominsight refused", func() bool {
		var doc struct {
			Upstreams map[string]struct {
				State         string `json:"state"`
				NextAttemptAt string `json:"next_attempt_at"`
			} `json:"upstreams"`
		}
		r := get(t, p.admin+"/status")
		if json.Unmarshal(r.body, &doc) != nil {
			t.Fatalf("/status: %s", r.body)
		}
		ready := 0
		for _, u := range doc.Upstreams {
			if u.State == "ready" {
				ready++
			}
		}
		pi := doc.Upstreams["prominsight"]
		return ready == 3 && pi.State == "error" && pi.NextAttemptAt != ""
	})
	for range 3 {
		call(t, p, "hgem")
	}
	wantError(t, call(t, p, "prominsight"), 502, "token_endpoint_error", "prominsight")

	ctx := browser(t, 1200, 900)
	if err := chromedp.Do(ctx, chromedp.Navigate(p.admin+"/status"), chromedp.WaitVisible(chromedp.CSS("#verdict"))); err != nil {
		t.Fatalf("loading the status page: %v", err)
	}
	page, err := chromedp.Run(ctx, chromedp.Evaluate[rendered](readPage))
	if err != nil {
		t.Fatalf("reading the status page: %v", err)
	}
	html, err := chromedp.Run(ctx, chromedp.OuterHTML(chromedp.CSS("html")))
	if err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	checkNoSecretIn(t, e, "the rendered status page", []byte(html+page.Text+strings.Join(page.Titles, "\n")))
	if *screenshot != "" {
		if err := os.WriteFile(*screenshot, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	if page.Verdict != "3 of 4 upstreams ready" {
		t.Errorf("verdict %q, want \"3 of 4 upstreams ready\"", page.Verdict)
	}
	if v, n, h := strings.Index(page.Text, page.Verdict), strings.Index(page.Text, "Not ready: prominsight (error)"), strings.Index(page.Text, "hgem"); v < 0 || n < v || h < n {
		t.Errorf("the verdict and what is not ready should come first:\n%.400s", page.Text)
	}
	if n := strings.Count(page.Text, refusal); n != 1 {
		t.Errorf("the refusal is shown %d times, want once:\n%s", n, page.Text)
	}
	if page.ScrollWidth > 1200 || page.ScrollWidth > page.ClientWidth {
		t.Errorf("horizontal scroll at 1200 px: scrollWidth %d, clientWidth %d", page.ScrollWidth, page.ClientWidth)
	}
	for _, name := range []string{"hgem", "inspera", "prodoscore", "prominsight"} {
		if w := page.TimelineW[name]; w < 800 {
			t.Errorf("%s: timeline %d px wide, want it across the section", name, w)
		}
	}
	for _, want := range []string{"hgem minted", "hgem tok", "hgem next", "prominsight failed", "prominsight backoff", "prominsight next"} {
		if page.Marks[want] == 0 {
			t.Errorf("no %q drawn; drawn: %v", want, page.Marks)
		}
	}
	if page.Marks["prominsight tok"] != 0 || page.Marks["prominsight minted"] != 0 {
		t.Errorf("prominsight never had a token, yet the timeline shows one: %v", page.Marks)
	}
	if !strings.Contains(strings.Join(page.Titles, "\n"), "prominsight: ") || !strings.Contains(strings.Join(page.Titles, "\n"), "token request failed: credentials refused; next attempt ") {
		t.Errorf("the failure's tooltip should name its reason and the next attempt: %q", page.Titles)
	}
	for _, want := range []string{"last hour: 1 failed (credentials refused ×1)", "last hour: 1 minted", "requests since start", "3: 3 × 200", "1: 1 × 502", "file:" + e.dir} {
		if !strings.Contains(page.Text, want) {
			t.Errorf("the page does not show %q:\n%s", want, page.Text)
		}
	}
	if page.Scripts != 0 || len(page.Resources) != 0 {
		t.Errorf("the page loads %d scripts, images or stylesheets and fetched %q; want none", page.Scripts, page.Resources)
	}
	if page.Refresh == "" {
		t.Error("the page does not reload itself")
	}

	// The page reloads by itself: a mark left in this document is gone once
	// the browser has loaded the page again.
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`window.tokenproxyMark = 1`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the page to reload itself", func() bool {
		gone, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`typeof window.tokenproxyMark === "undefined" && document.readyState === "complete"`))
		return err == nil && gone
	})
	fmt.Fprintf(os.Stderr, "status page: %d px of 1200 used, %d marks\n", page.ScrollWidth, len(page.Titles))
}
