package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/tokenproxy/tokenproxy/internal/metrics"
)

// errHeaderTimeout is the route's timeout passing before response headers.
var errHeaderTimeout = errors.New("upstream response headers timed out")

// injector is the ReverseProxy's transport. It runs after Rewrite, so the
// headers it sets are the last word: it takes a token, injects it, and on a
// 401 drops that token and replays the request once with a new one.
type injector struct {
	metrics *metrics.Metrics
}

func (in *injector) RoundTrip(req *http.Request) (*http.Response, error) {
	x := exchangeOf(req.Context())
	rt := x.route
	replayable, err := bufferBody(req, rt.ReplayMaxBytes)
	if err != nil {
		return nil, err
	}
	tok, err := rt.Tokens.Token(req.Context())
	if err != nil {
		return nil, err
	}
	resp, err := in.send(req, rt, tok.Header.SetOn)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || !replayable {
		return resp, err
	}
	// The upstream refused this token: drop it (unless a newer one already
	// replaced it) and try once more with whatever the broker has now.
	rt.Tokens.Invalidate(tok.Gen)
	fresh, err := rt.Tokens.Token(req.Context())
	if err == nil && fresh.Gen == tok.Gen {
		return resp, nil // nothing newer to try: the caller gets the 401
	}
	drain(resp.Body)
	if err != nil {
		// The caller learns why no token can be had (a refusal, an
		// unreachable token endpoint), not a 401 about a token it never saw.
		return nil, err
	}
	if req.GetBody != nil {
		if req.Body, err = req.GetBody(); err != nil {
			return nil, err
		}
	}
	x.replayed = true
	in.metrics.Replayed(rt.Name)
	return in.send(req, rt, fresh.Header.SetOn)
}

// send makes one attempt with the given injection, bounding the wait for
// response headers by the route's timeout; the body may stream for longer.
func (in *injector) send(req *http.Request, rt *Route, inject func(http.Header)) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	var timedOut atomic.Bool
	timer := time.AfterFunc(rt.Timeout, func() { timedOut.Store(true); cancel() })
	out := req.Clone(ctx)
	inject(out.Header)
	tr := rt.Transport
	if out.Header.Get("Upgrade") != "" && rt.UpgradeTransport != nil {
		// ReverseProxy keeps Upgrade, hop-by-hop as it is, only on a request
		// that asks to switch protocols.
		tr = rt.UpgradeTransport
	}
	resp, err := tr.RoundTrip(out)
	timer.Stop()
	if timedOut.Load() {
		if err == nil {
			resp.Body.Close()
		}
		cancel()
		return nil, errHeaderTimeout
	}
	if err != nil {
		cancel()
		return nil, err
	}
	if rwc, ok := resp.Body.(io.ReadWriteCloser); ok && resp.StatusCode == http.StatusSwitchingProtocols {
		resp.Body = &switchedBody{ReadWriteCloser: rwc, cancel: cancel}
		return resp, nil
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// bufferBody keeps a body of at most max bytes in memory so that it can be
// sent twice, and reports whether the request can be replayed. A larger
// body streams through untouched and its 401 goes back to the caller.
func bufferBody(req *http.Request, max int64) (bool, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return true, nil
	}
	if req.ContentLength > max {
		return false, nil
	}
	head, err := io.ReadAll(io.LimitReader(req.Body, max+1))
	if err != nil {
		return false, err
	}
	if int64(len(head)) > max {
		req.Body = readCloser{io.MultiReader(bytes.NewReader(head), req.Body), req.Body}
		return false, nil
	}
	req.Body.Close()
	req.Body = io.NopCloser(bytes.NewReader(head))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(head)), nil }
	req.ContentLength = int64(len(head))
	req.TransferEncoding = nil
	return true, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// drain reads a little of a body before closing it, so that the connection
// can be reused for the replay.
func drain(body io.ReadCloser) {
	io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	body.Close()
}

// cancelOnClose releases the attempt's context once the body is done.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}
