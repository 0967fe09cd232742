package sharing

import (
	"context"
	"sync"
)

// Memory is a Store in process memory with the same check-and-set rules as
// Vault's KV v2, for tests and for several caches in one process.
type Memory struct {
	mu   sync.Mutex
	recs map[string]memoryEntry
	// Err, when set, fails every call as an unreachable store would.
	err error
}

type memoryEntry struct {
	rec     Record
	version int
}

// NewMemory returns an empty Memory store.
func NewMemory() *Memory { return &Memory{recs: map[string]memoryEntry{}} }

// SetError makes every later call fail with err (nil: work again).
func (m *Memory) SetError(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.err = err
}

func (m *Memory) Load(_ context.Context, name string) (Record, int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return Record{}, 0, m.err
	}
	e := m.recs[name]
	return e.rec, e.version, nil
}

func (m *Memory) Save(_ context.Context, name string, rec Record, cas int) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return 0, m.err
	}
	e := m.recs[name]
	if e.version != cas {
		return 0, ErrConflict
	}
	e = memoryEntry{rec: rec, version: e.version + 1}
	m.recs[name] = e
	return e.version, nil
}
