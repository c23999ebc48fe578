package mtasts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// collectorKey is the key of a ReportCollector's state in its Store. Its "_"
// keeps it apart from the policy domains a Resolver stores, and DirCache.Keys
// does not list it.
const collectorKey = "_tlsrpt-collector"

// collectorVersion is the version of the stored state's format.
const collectorVersion = 1

// storedState is what a ReportCollector writes to its Store: the counts of
// the days not yet taken, and the reports still to be delivered.
type storedState struct {
	Version int         `json:"v"`
	Days    []storedDay `json:"days"`
	Outbox  []*delivery `json:"outbox,omitempty"`
}

// storedDay is the counts of one policy domain and UTC day.
type storedDay struct {
	Domain   string         `json:"domain"` // in A-labels
	Day      int64          `json:"day"`    // the day's start, in seconds since 1970 UTC
	Policies []storedPolicy `json:"policies"`
}

// storedPolicy is the counts under one policy, as a report carries them, and
// the key the collector keeps them under.
type storedPolicy struct {
	Key    string             `json:"key"`
	Result ReportPolicyResult `json:"result"`
}

// load reads the state in Store, once, and adds it to what the collector
// holds. A state that cannot be read or decoded is reported and left to be
// replaced by the next write.
func (c *ReportCollector) load() {
	if c.Store == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.loaded {
		return
	}
	c.loaded = true
	data, err := c.Store.Get(context.Background(), collectorKey)
	switch {
	case errors.Is(err, ErrCacheMiss):
		return
	case err != nil:
		c.storeError(fmt.Errorf("%w: reading the ReportCollector's state: %w", ErrCache, err))
		return
	}
	st, err := decodeCollectorState(data)
	if err != nil {
		c.storeError(err)
		return
	}
	if c.days == nil {
		c.days = map[dayKey]*dayResults{}
	}
	for _, sd := range st.Days {
		k := dayKey{domain: sd.Domain, day: sd.Day}
		d := c.days[k]
		if d == nil {
			d = &dayResults{policies: map[string]*policyResults{}}
			c.days[k] = d
		}
		for _, sp := range sd.Policies {
			p := d.policies[sp.Key]
			if p == nil {
				p = &policyResults{policy: sp.Result.Policy, failures: map[detailKey]int64{}}
				d.policies[sp.Key] = p
			}
			p.success += sp.Result.Summary.TotalSuccessfulSessionCount
			p.failure += sp.Result.Summary.TotalFailureSessionCount
			for _, f := range sp.Result.FailureDetails {
				p.failures[detailKey{
					resultType:  f.ResultType,
					sendingIP:   f.SendingMTAIP,
					mxHost:      f.ReceivingMXHostname,
					helo:        f.ReceivingMXHelo,
					receivingIP: f.ReceivingIP,
					reason:      f.FailureReasonCode,
				}] += f.FailedSessionCount
			}
		}
	}
	c.outbox = append(c.outbox, st.Outbox...)
}

// decodeCollectorState decodes and checks a stored state. Errors wrap
// ErrCacheCorrupt.
func decodeCollectorState(data []byte) (*storedState, error) {
	corrupt := func(why string) error {
		return fmt.Errorf("%w: the ReportCollector's state: %s", ErrCacheCorrupt, why)
	}
	var st storedState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, corrupt(err.Error())
	}
	if st.Version != collectorVersion {
		return nil, corrupt(fmt.Sprintf("version %d", st.Version))
	}
	for _, sd := range st.Days {
		if !isNormalDomain(sd.Domain) || sd.Day%(24*60*60) != 0 {
			return nil, corrupt(fmt.Sprintf("day %d of %q", sd.Day, sd.Domain))
		}
		for _, sp := range sd.Policies {
			s := sp.Result.Summary
			if sp.Key == "" || sp.Result.Policy.Domain != sd.Domain ||
				s.TotalSuccessfulSessionCount < 0 || s.TotalFailureSessionCount < 0 {
				return nil, corrupt(fmt.Sprintf("a policy of %q", sd.Domain))
			}
			for _, f := range sp.Result.FailureDetails {
				if f.FailedSessionCount < 0 || f.ResultType == "" {
					return nil, corrupt(fmt.Sprintf("a failure detail of %q", sd.Domain))
				}
			}
		}
	}
	for _, d := range st.Outbox {
		if d == nil || d.Report == nil || !isNormalDomain(d.Domain) || d.Report.policyDomain() != d.Domain || d.Next.IsZero() {
			return nil, corrupt("a report to deliver")
		}
		d.Report.Submitter = d.Submitter
	}
	return &st, nil
}

// encodeLocked encodes the collector's state; c.mu is held.
func (c *ReportCollector) encodeLocked() ([]byte, error) {
	st := storedState{Version: collectorVersion, Days: []storedDay{}, Outbox: c.outbox}
	for k, d := range c.days {
		sd := storedDay{Domain: k.domain, Day: k.day}
		for key, p := range d.policies {
			r := c.policyResult(p)
			sd.Policies = append(sd.Policies, storedPolicy{Key: key, Result: r})
		}
		st.Days = append(st.Days, sd)
	}
	return json.Marshal(st)
}

// save writes the state to Store unless a write that began after the
// caller's last change has succeeded already. Callers that arrive while a
// write is under way wait for it and then share the next one: each finds
// its change written when save returns, unless the write failed, which is
// reported.
func (c *ReportCollector) save() {
	if c.Store == nil {
		return
	}
	c.mu.Lock()
	want := c.gen
	c.mu.Unlock()

	c.saveMu.Lock()
	defer c.saveMu.Unlock()
	if c.savedGen >= want {
		return
	}
	c.mu.Lock()
	data, err := c.encodeLocked()
	gen := c.gen
	c.mu.Unlock()
	if err == nil {
		err = c.Store.Put(context.Background(), collectorKey, data)
	}
	if err != nil {
		c.storeError(fmt.Errorf("%w: writing the ReportCollector's state: %w", ErrCache, err))
		return
	}
	c.savedGen = gen
}

func (c *ReportCollector) storeError(err error) {
	if c.OnError != nil {
		c.OnError(err)
	}
}

// delivery is a report that a ReportSender has to deliver: before the policy
// domain's TLSRPT record is looked up, the report itself; after, one
// delivery per destination.
type delivery struct {
	Report    *Report `json:"report"`
	Submitter string  `json:"submitter"` // Report.Submitter, which its JSON leaves out
	Domain    string  `json:"domain"`    // the policy domain, in A-labels

	// URI is an https: destination; To are the addresses of the mailto:
	// ones, all sent one message. Neither is set until the record is looked
	// up.
	URI string   `json:"uri,omitempty"`
	To  []string `json:"to,omitempty"`

	Next     time.Time `json:"next"`               // the time of the next attempt
	Deadline time.Time `json:"deadline,omitzero"`  // no attempt after it; zero before the first
	Attempts int       `json:"attempts,omitempty"` // failed attempts so far
}

// looked reports whether the destination is known.
func (d *delivery) looked() bool { return d.URI != "" || len(d.To) > 0 }
