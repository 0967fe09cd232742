package sharing

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// storeKit opens fresh, empty stores of one kind for the conformance table.
type storeKit struct {
	name string
	// open returns an empty store and a way to delete a record's latest
	// version the way `vault kv delete` does.
	open func(t *testing.T) (Store, func(t *testing.T, name string))
}

func memoryKit() storeKit {
	return storeKit{name: "Memory", open: func(*testing.T) (Store, func(*testing.T, string)) {
		m := NewMemory()
		return m, func(_ *testing.T, name string) {
			m.mu.Lock()
			defer m.mu.Unlock()
			m.recs[name] = memoryEntry{version: m.recs[name].version}
		}
	}}
}

// conformance is what every Store does (store.go), run against Memory and
// Vault alike (TestStoreConformance, TestVaultStoreConformance).
var conformance = []struct {
	name string
	run  func(t *testing.T, s Store, del func(*testing.T, string))
}{
	{"load of a missing record is the zero record at version 0", func(t *testing.T, s Store, _ func(*testing.T, string)) {
		rec, v := mustLoad(t, s, "inspera")
		if v != 0 || !cmp.Equal(rec, Record{}) {
			t.Fatalf("got version %d, %+v", v, rec)
		}
	}},
	{"save with cas 0 creates version 1", func(t *testing.T, s Store, _ func(*testing.T, string)) {
		want := Record{AccessToken: "CANARY-a", Generation: 1}
		if v := mustSave(t, s, "inspera", want, 0); v != 1 {
			t.Fatalf("version %d, want 1", v)
		}
		if rec, v := mustLoad(t, s, "inspera"); v != 1 || !cmp.Equal(rec, want) {
			t.Fatalf("load: version %d, diff %s", v, cmp.Diff(want, rec))
		}
	}},
	{"a second save with cas 0 conflicts", func(t *testing.T, s Store, _ func(*testing.T, string)) {
		first := Record{AccessToken: "CANARY-first"}
		mustSave(t, s, "inspera", first, 0)
		wantConflict(t, s, "inspera", Record{AccessToken: "CANARY-second"}, 0)
		if rec, v := mustLoad(t, s, "inspera"); v != 1 || rec.AccessToken != first.AccessToken {
			t.Fatalf("the losing save changed the record: version %d", v)
		}
	}},
	{"save with a stale or future cas conflicts", func(t *testing.T, s Store, _ func(*testing.T, string)) {
		v1 := mustSave(t, s, "inspera", Record{Generation: 1}, 0)
		v2 := mustSave(t, s, "inspera", Record{Generation: 2}, v1)
		if v2 != v1+1 {
			t.Fatalf("versions %d then %d", v1, v2)
		}
		wantConflict(t, s, "inspera", Record{Generation: 3}, v1)
		wantConflict(t, s, "inspera", Record{Generation: 3}, v2+1)
		if rec, v := mustLoad(t, s, "inspera"); v != v2 || rec.Generation != 2 {
			t.Fatalf("version %d generation %d, want %d and 2", v, rec.Generation, v2)
		}
	}},
	{"every field round trips", func(t *testing.T, s Store, _ func(*testing.T, string)) {
		full := fullRecord(t, "store")
		partial := Record{AccessToken: "CANARY-p", Expiry: time.Date(2030, 1, 1, 0, 0, 0, 1, time.UTC), Generation: math.MaxUint64}
		v := 0
		for i, want := range []Record{full, {}, partial, full} {
			v = mustSave(t, s, "prodoscore", want, v)
			got, gotV := mustLoad(t, s, "prodoscore")
			if gotV != v || gotV != i+1 {
				t.Errorf("record %d: version %d, saved as %d", i, gotV, v)
			}
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("record %d (-want +got):\n%s", i, d)
			}
		}
	}},
	{"upstreams' records are independent", func(t *testing.T, s Store, _ func(*testing.T, string)) {
		mustSave(t, s, "hgem", Record{AccessToken: "CANARY-h"}, 0)
		mustSave(t, s, "hgem", Record{AccessToken: "CANARY-h2"}, 1)
		if v := mustSave(t, s, "inspera", Record{AccessToken: "CANARY-i"}, 0); v != 1 {
			t.Fatalf("inspera's first version is %d", v)
		}
		if rec, v := mustLoad(t, s, "hgem"); v != 2 || rec.AccessToken != "CANARY-h2" {
			t.Fatalf("hgem: version %d", v)
		}
	}},
	{"20 concurrent creators: exactly one wins", func(t *testing.T, s Store, _ func(*testing.T, string)) {
		race(t, s, "inspera", 0)
	}},
	{"20 concurrent updaters with the same cas: exactly one wins", func(t *testing.T, s Store, _ func(*testing.T, string)) {
		v := mustSave(t, s, "inspera", Record{}, 0)
		v = mustSave(t, s, "inspera", Record{}, v)
		race(t, s, "inspera", v)
	}},
	{"a deleted latest version reads as none and is written over with its version", func(t *testing.T, s Store, del func(*testing.T, string)) {
		v := mustSave(t, s, "inspera", Record{AccessToken: "CANARY-old"}, 0)
		v = mustSave(t, s, "inspera", Record{AccessToken: "CANARY-old2"}, v)
		del(t, "inspera")
		rec, got := mustLoad(t, s, "inspera")
		if got != v || !cmp.Equal(rec, Record{}) {
			t.Fatalf("after delete: version %d (want %d), record zero: %t", got, v, cmp.Equal(rec, Record{}))
		}
		wantConflict(t, s, "inspera", Record{}, 0)
		if n := mustSave(t, s, "inspera", Record{AccessToken: "CANARY-new"}, v); n != v+1 {
			t.Fatalf("write over the deleted version: version %d, want %d", n, v+1)
		}
		if rec, _ := mustLoad(t, s, "inspera"); rec.AccessToken != "CANARY-new" {
			t.Fatal("the write over the deleted version is not what loads")
		}
	}},
}

func TestStoreConformance(t *testing.T) { runConformance(t, memoryKit()) }

func runConformance(t *testing.T, kit storeKit) {
	for _, c := range conformance {
		t.Run(c.name, func(t *testing.T) {
			s, del := kit.open(t)
			c.run(t, s, del)
		})
	}
}

// race has 20 savers write name with cas at once; exactly one may win, and
// its record is what loads.
func race(t *testing.T, s Store, name string, cas int) {
	t.Helper()
	const n = 20
	var wg sync.WaitGroup
	start := make(chan struct{})
	versions, errs := make([]int, n), make([]error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			versions[i], errs[i] = s.Save(context.Background(), name, Record{MintedBy: fmt.Sprint("saver-", i)}, cas)
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("savers %d and %d both won", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, ErrConflict):
			t.Fatalf("saver %d: %v, want a win or ErrConflict", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no saver won")
	}
	rec, v := mustLoad(t, s, name)
	if v != cas+1 || versions[winner] != v || rec.MintedBy != fmt.Sprint("saver-", winner) {
		t.Fatalf("loaded version %d by %q; the winner was saver-%d with version %d", v, rec.MintedBy, winner, versions[winner])
	}
}

func mustLoad(t testing.TB, s Store, name string) (Record, int) {
	t.Helper()
	rec, v, err := s.Load(context.Background(), name)
	if err != nil {
		t.Fatalf("load %s: %v", name, err)
	}
	return rec, v
}

func mustSave(t testing.TB, s Store, name string, rec Record, cas int) int {
	t.Helper()
	v, err := s.Save(context.Background(), name, rec, cas)
	if err != nil {
		t.Fatalf("save %s with cas %d: %v", name, cas, err)
	}
	return v
}

func wantConflict(t testing.TB, s Store, name string, rec Record, cas int) {
	t.Helper()
	v, err := s.Save(context.Background(), name, rec, cas)
	if !errors.Is(err, ErrConflict) || v != 0 {
		t.Fatalf("save %s with cas %d: got version %d, %v; want ErrConflict", name, cas, v, err)
	}
}
