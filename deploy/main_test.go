package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// binary is tokenproxy, built from this repository for `tokenproxy validate`.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tokenproxy-deploy-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "tokenproxy")
	cmd := exec.Command("go", "build", "-o", binary, "./cmd/tokenproxy")
	cmd.Dir = ".."
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "deploy: cannot build tokenproxy:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
