package vendorsim

import (
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
)

// TestMain fails the run if any simulator handler is still running once every test has
// closed its servers: a hanging request that Close or clearing the fault did not release.
func TestMain(m *testing.M) {
	code := m.Run()
	http.DefaultClient.CloseIdleConnections()
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	for _, g := range strings.Split(stacks, "\n\n") {
		if strings.Contains(g, "vendorsim.(*Server).ServeHTTP") {
			fmt.Fprintf(os.Stderr, "leaked handler goroutine:\n%s\n", g)
			code = 1
		}
	}
	os.Exit(code)
}
