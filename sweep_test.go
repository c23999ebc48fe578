package mtasts

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// The in-memory cache forgets domains that hold nothing worth keeping, so
// that it does not grow with every domain a sender ever wrote to.
func TestSweep(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	r := &Resolver{Now: func() time.Time { return now }}
	live := &Policy{Mode: ModeEnforce, MaxAge: time.Hour, MX: []string{"mx.example"}, Fetched: now.Add(-time.Minute)}
	expired := &Policy{Mode: ModeEnforce, MaxAge: time.Hour, MX: []string{"mx.example"}, Fetched: now.Add(-2 * time.Hour)}
	past, future := now.Add(-time.Second), now.Add(time.Minute)
	states := map[string]struct {
		s    *state
		call bool
		keep bool
	}{
		"fresh negative":      {&state{freshUntil: future}, false, true},
		"stale negative":      {&state{freshUntil: past}, false, false},
		"stale live policy":   {&state{policy: live, freshUntil: past}, false, true},
		"stale expired":       {&state{policy: expired, freshUntil: past}, false, false},
		"stale in retry":      {&state{freshUntil: past, failedID: "1", retryAt: future}, false, true},
		"stale retry over":    {&state{freshUntil: past, failedID: "1", retryAt: past}, false, false},
		"stale, lookup going": {&state{freshUntil: past}, true, true},
		"no state yet":        {nil, false, true},
	}
	for name, tc := range states {
		e := &entry{}
		if tc.s != nil {
			e.state.Store(tc.s)
		}
		if tc.call {
			e.call = &call{}
		}
		r.entries.Store(name, e)
	}
	r.sweep()
	for name, tc := range states {
		_, ok := r.entries.Load(name)
		assert.Equal(t, tc.keep, ok, "after sweep, %s kept = %v, want %v", name, ok, tc.keep)
	}

	// Not again within MinTXTTTL.
	e := &entry{}
	e.state.Store(&state{freshUntil: past})
	r.entries.Store("later", e)
	r.sweep()
	_, ok := r.entries.Load("later")
	assert.True(t, ok, "swept twice within MinTXTTTL")
	now = now.Add(DefaultMinTXTTTL)
	r.sweep()
	_, ok = r.entries.Load("later")
	assert.False(t, ok, "not swept once MinTXTTTL had passed")
}
