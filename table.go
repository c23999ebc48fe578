package mtasts

import (
	"bytes"
	"hash/maphash"
	"math/bits"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// The in-memory layer: what a Resolver knows of each domain, in a hash table
// that Lookup reads without a lock, an allocation or a clock read of its own.
//
// A domain's answer is an immutable entry, replaced whole when it changes. An
// entry that holds a policy is a policyEntry, which keeps the Policy that
// Lookup returns, its first mx patterns and every string it refers to in two
// allocations; a negative answer is a negEntry. The table stores pointers to
// the entry header that both begin with.
//
// The table is split into shards by hash. Each shard is an open-addressing
// table (linear probing) of atomic pointers, written under the shard's mutex
// and replaced whole when it grows, so readers never wait. Deleted slots hold
// a tombstone until the next resize. One bit per slot says whether the slot
// was read since the eviction hand last passed it (the CLOCK approximation of
// least recently used).

// entry is the header of every answer in the table. Its times are renewed in
// place when DNS confirms the answer, so that the Policy a domain's Lookups
// return stays the same object while it does not change.
type entry struct {
	freshUntil atomic.Int64 // on the Resolver's clock: answer without asking DNS until then
	meta       atomic.Int64 // when stored, on the same clock; bit 0 set for a policyEntry
}

// policyEntry is an answer that holds a policy, live or expired.
type policyEntry struct {
	entry
	p  Policy
	mx [2]string // p.MX, when it has at most two patterns
}

// negEntry is an answer without a policy: no record, or a failure that no
// live policy hides.
type negEntry struct {
	entry
	key string
	err error // what Lookup returns
}

const metaPolicy = 1

func (e *entry) stored() int64   { return e.meta.Load() &^ metaPolicy }
func (e *entry) hasPolicy() bool { return e.meta.Load()&metaPolicy != 0 }

// setTimes dates e: stored at now, fresh until fresh. A reader may see one
// time new and the other old; either way it answers from memory no longer
// than the older answer allowed, or asks again.
func (e *entry) setTimes(now, fresh int64) {
	e.meta.Store(now&^metaPolicy | e.meta.Load()&metaPolicy)
	e.freshUntil.Store(fresh)
}

// asPolicy returns the policyEntry that e heads. e must hold a policy.
func (e *entry) asPolicy() *policyEntry { return (*policyEntry)(unsafe.Pointer(e)) }

// asNeg returns the negEntry that e heads. e must not hold a policy.
func (e *entry) asNeg() *negEntry { return (*negEntry)(unsafe.Pointer(e)) }

func (e *entry) key() string {
	if e.hasPolicy() {
		return e.asPolicy().p.Domain
	}
	return e.asNeg().key
}

// policy returns the policy e holds, or nil.
func (e *entry) policy() *Policy {
	if e.hasPolicy() {
		return &e.asPolicy().p
	}
	return nil
}

// result is what Lookup returns for e.
func (e *entry) result() (*Policy, error) {
	if e.hasPolicy() {
		return &e.asPolicy().p, nil
	}
	return nil, e.asNeg().err
}

// isFresh reports whether e answers at now without asking DNS. A clock that
// reads earlier than the time e was stored (an injected clock stepped back)
// makes e stale.
func (e *entry) isFresh(now int64) bool {
	return e.stored() <= now && now < e.freshUntil.Load()
}

// newPolicyEntry makes the entry for p, stored at now and fresh until fresh.
// It copies p's strings into one allocation, sharing what repeats (the domain
// is usually a suffix of an mx pattern), so that the entry keeps nothing else
// alive: not the fetched body, not the caller's strings.
func newPolicyEntry(p *Policy, now, fresh int64) *policyEntry {
	pe := &policyEntry{}
	pe.meta.Store(metaPolicy)
	pe.setTimes(now, fresh)
	pe.p = *p
	pe.p.Mode = canonicalMode(p.Mode)

	// Lay the strings out in a scratch buffer, each one that is already
	// there (as a whole string or inside one) only once, then copy the
	// buffer into one string of exactly its size and cut them from it.
	var (
		scratch [256]byte
		buf     = scratch[:0]
		spans   = make([][2]int, 0, 8) // where each string lies in buf
	)
	add := func(s string) {
		i := bytes.Index(buf, []byte(s))
		if i < 0 {
			i = len(buf)
			buf = append(buf, s...)
		}
		spans = append(spans, [2]int{i, i + len(s)})
	}
	for _, m := range p.MX {
		add(m)
	}
	add(p.Domain)
	add(p.ID)
	for _, x := range p.Extensions {
		add(x.Key)
		add(x.Value)
	}
	all := string(buf)
	cut := func() string {
		sp := spans[0]
		spans = spans[1:]
		return all[sp[0]:sp[1]]
	}

	mx := pe.mx[:0:len(pe.mx)]
	if len(p.MX) > len(pe.mx) {
		mx = make([]string, 0, len(p.MX))
	}
	for range p.MX {
		mx = append(mx, cut())
	}
	pe.p.MX = mx
	if len(p.MX) == 0 {
		pe.p.MX = nil
	}
	pe.p.Domain = cut()
	pe.p.ID = cut()
	if len(p.Extensions) > 0 {
		exts := make([]Extension, len(p.Extensions))
		for i := range exts {
			exts[i] = Extension{cut(), cut()}
		}
		pe.p.Extensions = exts
	}
	return pe
}

// canonicalMode returns the package's constant for m, so that a policy does
// not keep the body it was parsed from alive through its mode.
func canonicalMode(m Mode) Mode {
	switch m {
	case ModeEnforce:
		return ModeEnforce
	case ModeTesting:
		return ModeTesting
	case ModeNone:
		return ModeNone
	}
	return m
}

func newNegEntry(key string, err error, now, fresh int64) *negEntry {
	e := &negEntry{key: strings.Clone(key), err: err}
	e.setTimes(now, fresh)
	return e
}

// tombstone marks a deleted slot.
var tombstone = new(entry)

// memCache is a Resolver's in-memory layer.
type memCache struct {
	seed     maphash.Seed
	shift    uint // hash >> shift picks the shard
	perShard int  // most entries a shard holds; 0 for no limit
	shards   []shard
}

// shard is one part of the table, with the lookups under way and the failures
// remembered for its domains.
type shard struct {
	tab  atomic.Pointer[table]
	seed maphash.Seed // the memCache's

	// mu guards everything below and every write to tab's slots.
	mu        sync.Mutex
	count     int // live slots
	policies  int // live slots that hold a policy
	tombs     int // tombstones
	hand      uint64
	calls     map[string]*call    // the work under way, by domain
	fails     map[string]*failure // the last failed fetch, by domain
	nextSweep int64               // on the Resolver's clock
	lastSweep int64

	_ [64]byte // keep shards' hot words on separate cache lines
}

// table is an array of slots and their reference bits. Its size is any
// number: a hash picks a slot by multiplying, not by masking, so that a table
// can grow by a fifth rather than double and stays about three-quarters full.
type table struct {
	size  uint64
	slots []atomic.Pointer[entry]
	refs  []atomic.Uint32 // one bit per slot: read since the hand passed
}

// home is the first slot of h's probe sequence. It is taken from the bits
// of h below those that chose the shard, which all of the shard's keys share.
func (t *table) home(h uint64) uint64 {
	hi, _ := bits.Mul64(h<<maxShardBits, t.size)
	return hi
}

// next is the slot after i, wrapping around.
func (t *table) next(i uint64) uint64 {
	if i++; i == t.size {
		return 0
	}
	return i
}

func newTable(size int) *table {
	return &table{
		size:  uint64(size),
		slots: make([]atomic.Pointer[entry], size),
		refs:  make([]atomic.Uint32, (size+31)/32),
	}
}

// touch marks slot i as read. It writes only when the bit is not set yet, so
// that readers of a popular domain share its cache line.
func (t *table) touch(i uint64) {
	w, b := &t.refs[i>>5], uint32(1)<<(i&31)
	if w.Load()&b == 0 {
		w.Or(b)
	}
}

// referenced reports whether slot i was read since the last call, and clears
// its bit.
func (t *table) referenced(i uint64) bool {
	w, b := &t.refs[i>>5], uint32(1)<<(i&31)
	return w.And(^b)&b != 0
}

// maxShardBits is the most bits of a hash that pick a shard.
const maxShardBits = 6

func newMemCache(maxEntries int) *memCache {
	// A shard per 4096 entries allowed, up to 64: small limits stay exact
	// enough, large tables resize a shard at a time.
	n := 1 << maxShardBits
	if maxEntries > 0 {
		n = 1 << min(maxShardBits, bits.Len(uint(maxEntries/4096)))
	}
	m := &memCache{seed: maphash.MakeSeed(), shift: uint(64 - bits.TrailingZeros(uint(n))), shards: make([]shard, n)}
	if maxEntries > 0 {
		m.perShard = max(1, maxEntries/n)
	}
	for i := range m.shards {
		m.shards[i].seed = m.seed
		m.shards[i].calls = map[string]*call{}
		m.shards[i].fails = map[string]*failure{}
	}
	return m
}

func (m *memCache) hash(key string) uint64 { return maphash.String(m.seed, key) }

func (m *memCache) shardOf(h uint64) *shard {
	if m.shift == 64 {
		return &m.shards[0]
	}
	return &m.shards[h>>m.shift]
}

// get returns the entry for key, or nil, and marks it used. It takes no lock.
func (m *memCache) get(key string) *entry {
	h := m.hash(key)
	t := m.shardOf(h).tab.Load()
	i, e := t.find(h, key)
	if e != nil {
		t.touch(i)
	}
	return e
}

// peek returns the entry for key, or nil, without marking it used: for
// looking at memory in the background. It takes no lock.
func (m *memCache) peek(key string) *entry {
	h := m.hash(key)
	_, e := m.shardOf(h).tab.Load().find(h, key)
	return e
}

// find returns key's entry in t and its slot, or a nil entry. It takes no
// lock: the slots are read atomically, and written under the shard's mu.
func (t *table) find(h uint64, key string) (uint64, *entry) {
	if t == nil {
		return 0, nil
	}
	for i := t.home(h); ; i = t.next(i) {
		e := t.slots[i].Load()
		if e == nil {
			return 0, nil
		}
		if e != tombstone && e.key() == key {
			return i, e
		}
	}
}

// lookup returns the entry for key without marking it used. mu must be held.
func (s *shard) lookup(h uint64, key string) *entry {
	_, e := s.tab.Load().find(h, key)
	return e
}

// put stores e under its key, replacing what was there, and evicts to stay
// within limit (0 for none). It returns how many entries it evicted. mu must
// be held.
func (s *shard) put(h uint64, e *entry, limit int, now time.Time) (evicted int) {
	key := e.key()
	t := s.tab.Load()
	if i, old := t.find(h, key); old != nil {
		s.policies += b2i(e.hasPolicy()) - b2i(old.hasPolicy())
		t.slots[i].Store(e)
		return 0
	}
	for limit > 0 && s.count >= limit {
		s.evict(now)
		evicted++
	}
	if t == nil || (s.count+s.tombs+1)*20 > len(t.slots)*17 {
		t = s.resize(s.count + 1)
	}
	i := t.home(h)
	for {
		old := t.slots[i].Load()
		if old == nil || old == tombstone {
			if old == tombstone {
				s.tombs--
			}
			break
		}
		i = t.next(i)
	}
	// A new entry is not marked as read: one that is never read again (a
	// domain written to once) leaves before one that is.
	t.slots[i].Store(e)
	s.count++
	s.policies += b2i(e.hasPolicy())
	return evicted
}

// remove deletes key's entry, if any. mu must be held.
func (s *shard) remove(h uint64, key string) bool {
	t := s.tab.Load()
	i, e := t.find(h, key)
	if e == nil {
		return false
	}
	s.removeAt(t, i)
	return true
}

func (s *shard) removeAt(t *table, i uint64) {
	s.policies -= b2i(t.slots[i].Load().hasPolicy())
	t.slots[i].Store(tombstone)
	s.count--
	s.tombs++
}

// resize replaces the table with one sized for n entries and no tombstones.
// Readers of the old table go on reading it; it is not written again.
func (s *shard) resize(n int) *table {
	// 70% full after a resize, 85% before the next: linear probing stays
	// short (about four slots to find a key at 85%), and the table costs
	// about 10 bytes an entry.
	size := max(8, n*10/7+1)
	old := s.tab.Load()
	t := newTable(size)
	if old != nil {
		for i := range old.slots {
			e := old.slots[i].Load()
			if e == nil || e == tombstone {
				continue
			}
			j := t.home(maphash.String(s.seed, e.key()))
			for t.slots[j].Load() != nil {
				j = t.next(j)
			}
			t.slots[j].Store(e)
			if old.refs[i>>5].Load()&(1<<(i&31)) != 0 {
				t.touch(j)
			}
		}
	}
	s.tombs = 0
	s.tab.Store(t)
	return t
}

// evict forgets one entry. While the shard holds negative answers, it forgets
// one of those or an expired policy: forgetting a negative answer costs one
// DNS query, forgetting a live policy a fetch, and, without a durable Cache,
// the policy's protection until then. Among the candidates it chooses as
// CLOCK does: the first the hand finds that was not read since it last
// passed. mu must be held and the shard not empty.
func (s *shard) evict(now time.Time) {
	t := s.tab.Load()
	cheapOnly := s.count > s.policies
	for n := 0; ; n++ {
		i := s.hand % t.size
		s.hand = i + 1
		e := t.slots[i].Load()
		if e == nil || e == tombstone {
			continue
		}
		if cheapOnly {
			if p := e.policy(); p != nil && now.Before(p.Expires()) {
				continue
			}
		}
		if t.referenced(i) && n < 2*len(t.slots) {
			continue
		}
		s.drop(t, i, e)
		return
	}
}

// drop removes the entry at slot i and what the shard remembers for it.
func (s *shard) drop(t *table, i uint64, e *entry) {
	delete(s.fails, e.key())
	s.removeAt(t, i)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
