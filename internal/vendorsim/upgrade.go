package vendorsim

import (
	"context"
	"net/http"
	"strings"

	"github.com/coder/websocket"
)

// UpgradePath is the API route, the same on every simulator, that switches protocols behind
// the same token check as every other API call, so that a proxy's upgrade path can be seen
// end to end. `Upgrade: websocket` gets a WebSocket (RFC 6455) echo: each message comes
// back as it was sent (up to 1 MiB), and the text message "close" makes the simulator close the
// connection (status 1000). Any other `Upgrade` token gets that protocol echoed back in the
// 101 and a line echo on the raw connection: each line comes back, and the line "close"
// makes the simulator close the connection. Without `Upgrade` it answers 426.
const UpgradePath = "/api/upgrade/echo"

func (s *Server) setupUpgrade() {
	s.api.HandleFunc("GET "+UpgradePath, s.upgradeEcho)
}

func (s *Server) upgradeEcho(w http.ResponseWriter, r *http.Request) {
	proto := r.Header.Get("Upgrade")
	switch {
	case proto == "":
		w.Header().Set("Upgrade", "websocket")
		s.writeError(w, http.StatusUpgradeRequired, "invalid_request", "this endpoint needs an Upgrade header")
	case strings.EqualFold(proto, "websocket"):
		s.websocketEcho(w, r)
	default:
		s.lineEcho(w, proto)
	}
}

// websocketEcho ends when either side closes, or when the simulator is closed.
func (s *Server) websocketEcho(w http.ResponseWriter, r *http.Request) {
	// The proxy reaches the simulator under the upstream's own Host; a browser's Origin
	// would name the caller's page, which the simulator has no reason to police.
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return // Accept has answered
	}
	defer c.CloseNow()
	c.SetReadLimit(maxAPIBody)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.closed:
			c.CloseNow()
		case <-ctx.Done():
		}
	}()
	for {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			return
		}
		if typ == websocket.MessageText && string(msg) == "close" {
			c.Close(websocket.StatusNormalClosure, "closed by the simulator")
			return
		}
		if err := c.Write(ctx, typ, msg); err != nil {
			return
		}
	}
}

// lineEcho speaks the raw protocol named by proto after a 101.
func (s *Server) lineEcho(w http.ResponseWriter, proto string) {
	w.Header().Set("Connection", "Upgrade")
	w.Header().Set("Upgrade", proto)
	w.WriteHeader(http.StatusSwitchingProtocols)
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-s.closed:
			conn.Close()
		case <-done:
		}
	}()
	for {
		line, err := brw.ReadString('\n')
		if err != nil {
			return
		}
		if strings.TrimRight(line, "\r\n") == "close" {
			return
		}
		if _, err := brw.WriteString(line); err != nil || brw.Flush() != nil {
			return
		}
	}
}
