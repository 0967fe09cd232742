package testlog

import (
	"errors"
	"fmt"
	"testing"
)

// failures is a testing.TB that keeps what Errorf was given.
type failures struct {
	testing.TB
	got []string
}

func (f *failures) Helper() {}

func (f *failures) Errorf(format string, args ...any) {
	f.got = append(f.got, fmt.Sprintf(format, args...))
}

// Hidden finds a secret in the log and in a noted error, once per secret,
// and nothing in a record without it.
func TestRecordHidden(t *testing.T) {
	var r Record
	fmt.Fprintln(&r.Log, `{"msg":"login","token":"CANARY-log"}`)
	r.Note(errors.New("refused: CANARY-err"))
	r.Note(nil)

	f := &failures{TB: t}
	r.Hidden(f, []string{"CANARY-log", "CANARY-err", "CANARY-absent"})
	if len(f.got) != 2 {
		t.Fatalf("%d failures, want 2 (one per secret present): %q", len(f.got), f.got)
	}

	var clean Record
	fmt.Fprintln(&clean.Log, `{"msg":"login"}`)
	f = &failures{TB: t}
	clean.Hidden(f, []string{"CANARY-log"})
	if len(f.got) != 0 {
		t.Fatalf("failures for a clean record: %q", f.got)
	}
}
