package deploy

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"testing"
)

// systemdMemory reads a unit's MemoryMax= and the GOMEMLIMIT its
// Environment= sets, both in bytes. MemoryMax's K, M, G and T are powers of
// 1024 (systemd.resource-control(5)); the last assignment of each wins.
func systemdMemory(unit string) (goMemLimit, memoryMax int64, err error) {
	maxes := regexp.MustCompile(`(?m)^MemoryMax=(\d+)([KMGT]?)\s*$`).FindAllStringSubmatch(unit, -1)
	if len(maxes) == 0 {
		return 0, 0, fmt.Errorf("no MemoryMax= in bytes")
	}
	m := maxes[len(maxes)-1]
	memoryMax, _ = strconv.ParseInt(m[1], 10, 64)
	memoryMax <<= map[string]int{"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m[2]]
	envs := regexp.MustCompile(`(?m)^Environment=.*\bGOMEMLIMIT=([^\s"]+)`).FindAllStringSubmatch(unit, -1)
	if len(envs) == 0 {
		return 0, memoryMax, fmt.Errorf("no Environment=GOMEMLIMIT=")
	}
	goMemLimit, err = parseGoMemLimit(envs[len(envs)-1][1])
	return goMemLimit, memoryMax, err
}

// The VM's unit gives the Go runtime the same headroom under MemoryMax as
// the pods get under their memory limit.
func TestSystemdGoMemLimit(t *testing.T) {
	b, err := os.ReadFile("systemd/tokenproxy.service")
	if err != nil {
		t.Fatal(err)
	}
	g, m, err := systemdMemory(string(b))
	if err != nil {
		t.Fatalf("systemd/tokenproxy.service: %v", err)
	}
	if err := memHeadroom(g, m); err != nil {
		t.Errorf("systemd/tokenproxy.service: %v (MemoryMax %d bytes)", err, m)
	}
	for _, c := range []struct {
		unit string
		g, m int64
		bad  bool
	}{
		{"MemoryMax=128M\nEnvironment=GOMEMLIMIT=115MiB\n", 115 << 20, 128 << 20, false},
		{"MemoryMax=128M\nEnvironment=GOMEMLIMIT=128MiB\n", 128 << 20, 128 << 20, true},
		{"MemoryMax=1G\nEnvironment=\"GOMEMLIMIT=900MiB\"\n", 900 << 20, 1 << 30, false},
		{"MemoryMax=134217728\nEnvironment=GOGC=100 GOMEMLIMIT=134217728\n", 128 << 20, 128 << 20, true},
		{"MemoryMax=200M\nEnvironment=GOMEMLIMIT=180MiB GOGC=50\n", 180 << 20, 200 << 20, false},
	} {
		g, m, err := systemdMemory(c.unit)
		if err != nil || g != c.g || m != c.m || (memHeadroom(g, m) != nil) != c.bad {
			t.Errorf("%q: GOMEMLIMIT %d, MemoryMax %d, %v; headroom %v", c.unit, g, m, err, memHeadroom(g, m))
		}
	}
}
