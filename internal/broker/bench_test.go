package broker

import (
	"context"
	"sync"
	"testing"
	"time"
)

// BenchmarkToken measures the warm path every proxied request takes, against
// the floor of a mutex-guarded read of the same value (the baseline).
func BenchmarkToken(b *testing.B) {
	b.Run("path=mutex-baseline", func(b *testing.B) {
		var mu sync.Mutex
		tok := Token{AccessToken: "t"}
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				mu.Lock()
				t := tok
				mu.Unlock()
				_ = t
			}
		})
	})
	b.Run("path=cache-warm", func(b *testing.B) {
		f := &fakeFetcher{fn: lifetime(time.Hour, 0)}
		c := New("bench", f, tuned(Options{}))
		defer c.Close()
		c.SetCredentials(testCreds)
		if _, err := c.Token(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			for pb.Next() {
				if _, err := c.Token(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
