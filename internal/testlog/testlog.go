// Package testlog holds what tests capture a process's or a logger's output
// in, so that they can search it (for canary secrets, for log lines) while
// it is still being written.
package testlog

import (
	"bytes"
	"strings"
	"sync"
	"testing"
)

// Buffer is a bytes.Buffer safe for concurrent writers and readers. It is
// also a zapcore.WriteSyncer.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// Sync does nothing: the bytes are already in memory.
func (b *Buffer) Sync() error { return nil }

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Record is a component's log and the errors it returned, searched
// together by Hidden for the secrets that must appear in neither.
type Record struct {
	Log Buffer

	mu   sync.Mutex
	errs []string
}

// Note keeps err's text; a nil err is ignored.
func (r *Record) Note(err error) {
	if err == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err.Error())
}

// Hidden fails t once for each of secrets found in the log or in a noted
// error, showing where.
func (r *Record) Hidden(t testing.TB, secrets []string) {
	t.Helper()
	r.mu.Lock()
	text := r.Log.String() + strings.Join(r.errs, "\n")
	r.mu.Unlock()
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("%q appears in a log line or error:\n%s", s, text)
		}
	}
}
