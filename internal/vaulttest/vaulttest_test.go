package vaulttest

import (
	"context"
	"testing"

	"go.uber.org/goleak"
)

func TestServerRestartKeepsAddressAndLosesData(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	func() {
		s := Start(t)
		defer s.Stop()
		ctx := context.Background()
		c := s.Client()
		if _, err := c.KVv2("secret").Put(ctx, "a", map[string]any{"k": "v"}); err != nil {
			t.Fatalf("put: %v", err)
		}
		addr := s.Addr()
		s.Restart()
		if s.Addr() != addr {
			t.Fatalf("address changed from %s to %s", addr, s.Addr())
		}
		if _, err := c.KVv2("secret").Get(ctx, "a"); err == nil {
			t.Fatal("the secret survived a restart of an in-memory dev server")
		}
		if _, err := c.KVv2("secret").Put(ctx, "a", map[string]any{"k": "v"}); err != nil {
			t.Fatalf("put after restart (root token must be the same): %v", err)
		}
	}()
}
