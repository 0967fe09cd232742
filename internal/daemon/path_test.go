package daemon

import (
	"io"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap/zapcore"
)

// A config named by a relative path (tokenproxy run --config g1.yaml) is
// shown, and re-read on reload, by its absolute path.
func TestConfigPathIsAbsolute(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	cfg := mustParse(t, "upstreams:\n  h: {type: hgem, base_url: 'https://h', credentials: 'env:H'}\n")
	d, err := New(cfg, "g1.yaml", Options{LogOutput: zapcore.AddSync(io.Discard), ReplicaID: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := d.configInfo().Path, filepath.Join(wd, "g1.yaml"); got != want {
		t.Errorf("config path %q, want %q", got, want)
	}
}
