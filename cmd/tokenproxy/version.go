package main

import "runtime/debug"

// Set at build time, as the Dockerfile does:
//
//	go build -ldflags "-X main.version=v1.2.3 -X main.commit=$(git rev-parse HEAD) -X main.date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
var version, commit, date string

// buildInfo is what was built, from what, and when.
type buildInfo struct{ version, commit, date string }

// build is the stamped version, commit and date. What was not stamped comes
// from the Go toolchain's build info (a module version for `go install
// ...@v1.2.3`; the VCS revision and commit time for a build in a checkout,
// the revision marked -dirty for uncommitted changes), else "unknown".
func build() buildInfo {
	b := buildInfo{version, commit, date}
	if bi, ok := debug.ReadBuildInfo(); ok {
		b = b.fill(bi)
	}
	for _, f := range []*string{&b.version, &b.commit, &b.date} {
		if *f == "" {
			*f = "unknown"
		}
	}
	return b
}

func (b buildInfo) fill(bi *debug.BuildInfo) buildInfo {
	if b.version == "" && bi.Main.Version != "(devel)" {
		b.version = bi.Main.Version
	}
	var rev, at string
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if b.commit == "" && rev != "" {
		b.commit = rev
		if dirty {
			b.commit += "-dirty"
		}
	}
	if b.date == "" {
		b.date = at
	}
	return b
}
