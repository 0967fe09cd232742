package daemon

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tokenproxy/tokenproxy/internal/testlog"
)

// The data plane's request lines wait in the buffer; any other line takes
// them out with it, in order.
func TestPromptCoreHoldsOnlyRequestLines(t *testing.T) {
	out := &testlog.Buffer{}
	bw := &zapcore.BufferedWriteSyncer{WS: out, Size: 64 << 10, FlushInterval: time.Hour}
	defer bw.Stop()
	opt := Options{LogOutput: bw}
	log := zap.New(&promptCore{opt.logger(zapcore.InfoLevel).Core()})
	proxy := log.Named("proxy")

	proxy.Info("request", zap.Int("status", 200))
	proxy.Info("request", zap.Int("status", 201))
	if s := out.String(); s != "" {
		t.Fatalf("request lines written at once: %q", s)
	}
	log.Named("broker").Info("request") // another logger's "request" is not the data plane's
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], `"status":200`) || !strings.Contains(lines[1], `"status":201`) || !strings.Contains(lines[2], `"broker"`) {
		t.Fatalf("after another line, got %q", lines)
	}
	proxy.Info("request", zap.Int("status", 202))
	proxy.Warn("upstream unreachable")
	if s := out.String(); !strings.Contains(s, `"status":202`) || !strings.Contains(s, "upstream unreachable") {
		t.Fatalf("a warning did not take the request line out: %q", s)
	}
}
