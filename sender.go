package mtasts

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Defaults of a ReportSender.
const (
	// DefaultReportSpread is how long after the end of a UTC day a
	// ReportSender spreads the delivery of that day's reports over.
	DefaultReportSpread = 4 * time.Hour

	// DefaultReportRetryFor is how long a ReportSender retries a report after
	// its first attempt: RFC 8460 §5.4 says up to 24 hours.
	DefaultReportRetryFor = 24 * time.Hour

	// DefaultReportRetryDelay is how long a ReportSender waits before its
	// first retry; each retry after that waits twice as long as the last, up
	// to maxReportRetryDelay.
	DefaultReportRetryDelay = 5 * time.Minute
)

const (
	// maxReportRetryDelay caps the backoff between retries.
	maxReportRetryDelay = 4 * time.Hour

	// reportAttemptTimeout bounds one lookup or delivery.
	reportAttemptTimeout = 2 * time.Minute

	// senderPoll is the longest Run sleeps between two looks at the clock,
	// so that it follows a clock that is set rather than run.
	senderPoll = time.Minute
)

// A ReportSender delivers the reports of a ReportCollector: after each UTC
// day, it looks up the TLSRPT record of each policy domain (RFC 8460 §3) and
// delivers the day's report to every destination the record names: by HTTPS
// POST to each https: URI (§5.3.2), and in one message to the addresses of
// the mailto: URIs (§5.3.1). Each destination is retried on its own until it
// succeeds or RetryFor runs out. Attempts are made one at a time, each
// bounded by two minutes. Its zero value, with
// Collector set, delivers to https: destinations; SubmitMail must be set for
// mailto: ones.
//
// A sender keeps the reports it has still to deliver in its Collector, and so
// in the Collector's Store if it has one: a restarted process delivers what
// the last one did not. A report is delivered at least once to each
// destination; a crash between a delivery and the write that records it
// makes the report be delivered again.
//
// Do not call the Collector's TakeFinished or TakeAll while a sender serves
// it: the reports they take are not delivered by the sender.
type ReportSender struct {
	// Collector holds the counts and the reports to deliver. Required.
	Collector *ReportCollector

	// Resolver looks up the TLSRPT records. If nil, a zero Resolver is used.
	Resolver *Resolver

	// HTTPClient posts the reports to https: destinations, as PostReport
	// does with it (nil: PostReport's default client).
	HTTPClient *http.Client

	// SubmitMail submits a report message, from from to the addresses to, to
	// the mail system: it should DKIM-sign the message for the Submitter's
	// domain first (RFC 8460 §3, see Report.Mail). Its own deliveries must
	// not be counted in the Collector (RFC 8460 §3). If nil, reports are not
	// mailed: a domain's mailto: destinations are passed to OnError.
	SubmitMail func(ctx context.Context, from string, to []string, msg []byte) error

	// From is the address reports are mailed from, of the Submitter's domain.
	// If empty, "tlsrpt-noreply@" and the Collector's Submitter.
	From string

	// Spread is how long after the end of a day its reports are delivered
	// over, each at a random time within it, so that the receivers of many
	// senders do not all get the reports at midnight (RFC 8460 §4.1 has
	// reports delivered with some delay, perhaps several hours). If zero or
	// negative, DefaultReportSpread.
	Spread time.Duration

	// RetryFor is how long after the first attempt a report is retried,
	// with exponential backoff, before it is given up and passed to OnError.
	// If zero or negative, DefaultReportRetryFor (RFC 8460 §5.4).
	RetryFor time.Duration

	// RetryDelay is the wait before the first retry; each retry waits twice
	// as long as the one before, with some jitter, up to four hours. If zero
	// or negative, DefaultReportRetryDelay.
	RetryDelay time.Duration

	// Now returns the current time. If nil, the Collector's clock is used.
	Now func() time.Time

	// OnError, if not nil, is called for each report it could not deliver to
	// a destination, once it gives up: its retries ran out, the failure is
	// one retrying does not mend (ErrInvalidReport), the TLSRPT record names
	// no destination the sender can deliver to, or its mailto: destinations
	// have no SubmitMail. domain is the policy domain, in A-labels; err wraps
	// the last failure. A domain that publishes no valid TLSRPT record wants
	// no reports (RFC 8460 §3): its reports are dropped without a call. r
	// may still be being delivered to other destinations: do not modify it.
	OnError func(domain string, r *Report, err error)

	mu           sync.Mutex // one step at a time; guards zeroResolver
	zeroResolver *Resolver  // used when Resolver is nil
}

// Run delivers the Collector's reports for as long as ctx lasts: after each
// UTC day ends, and then as the retries fall due. It returns nil once ctx is
// done, after the delivery under way has stopped; the reports not yet
// delivered stay in the Collector (and its Store) for the next Run. It
// returns an error at once if Collector is nil. Run one Run per sender.
func (s *ReportSender) Run(ctx context.Context) error {
	if s.Collector == nil {
		return errors.New("mtasts: ReportSender without a Collector")
	}
	for {
		next := s.step(ctx)
		if !sleep(ctx, min(max(next.Sub(s.now()), time.Second), senderPoll)) {
			return nil
		}
	}
}

// step queues the reports of the days that have ended, makes the attempts
// that are due, one after the other, and returns the time the next one is.
func (s *ReportSender) step(ctx context.Context) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.Collector
	now := s.now()
	c.queueFinished(now, s.spread())
	for _, d := range c.due(now) {
		if ctx.Err() != nil {
			break
		}
		s.attempt(ctx, d)
	}
	return c.nextDue(s.now())
}

// attempt looks up the destinations of d, or delivers it to its destination.
func (s *ReportSender) attempt(ctx context.Context, d *delivery) {
	c := s.Collector
	now := s.now()
	c.mu.Lock()
	if d.Deadline.IsZero() {
		d.Deadline = now.Add(s.retryFor())
	}
	c.mu.Unlock()
	actx, cancel := context.WithTimeout(ctx, reportAttemptTimeout)
	defer cancel()
	if d.looked() {
		if err := s.deliver(actx, d); err != nil {
			s.failed(ctx, d, err)
			return
		}
		c.replace(d)
		return
	}

	rec, err := s.resolver().LookupTLSRPT(actx, d.Domain)
	switch {
	case errors.Is(err, ErrNoTLSRPTRecord), errors.Is(err, ErrInvalidTLSRPTRecord), errors.Is(err, ErrInvalidDomain):
		c.replace(d) // RFC 8460 §3: the domain wants no reports
		return
	case err != nil:
		s.failed(ctx, d, err)
		return
	}
	var dests []*delivery
	dest := func(uri string, to []string) *delivery {
		return &delivery{Report: d.Report, Submitter: d.Submitter, Domain: d.Domain, URI: uri, To: to, Next: now, Deadline: d.Deadline}
	}
	for _, u := range rec.HTTPS() {
		dests = append(dests, dest(u, nil))
	}
	if to := rec.Mailto(); len(to) > 0 {
		if s.SubmitMail != nil {
			dests = append(dests, dest("", to))
		} else {
			s.giveUp(d, fmt.Errorf("%w: %s: mailto: destinations %q, and no SubmitMail", ErrReportDelivery, d.Domain, to))
		}
	}
	if len(dests) == 0 && len(rec.Mailto()) == 0 {
		s.giveUp(d, fmt.Errorf("%w: %s: no https: or mailto: destination in %q", ErrReportDelivery, d.Domain, rec.String()))
	}
	c.replace(d, dests...)
	for _, nd := range dests {
		if ctx.Err() != nil {
			return
		}
		s.attempt(ctx, nd)
	}
}

// deliver makes one attempt to deliver d to its destination.
func (s *ReportSender) deliver(ctx context.Context, d *delivery) error {
	if d.URI != "" {
		return PostReport(ctx, s.HTTPClient, d.URI, d.Report)
	}
	from := s.From
	if from == "" {
		from = "tlsrpt-noreply@" + d.Submitter
	}
	msg, err := d.Report.Mail(from, d.To, s.now())
	if err != nil {
		return err
	}
	if err := s.SubmitMail(ctx, from, d.To, msg); err != nil {
		return fmt.Errorf("%w: mail to %q: %w", ErrReportDelivery, d.To, err)
	}
	return nil
}

// failed schedules the next attempt of d after a failure, or gives d up when
// retrying does not help or the next attempt would fall after its deadline.
// A failure because ctx ended is not counted: d is tried again as it was.
func (s *ReportSender) failed(ctx context.Context, d *delivery, err error) {
	if ctx.Err() != nil {
		return
	}
	c := s.Collector
	now := s.now()
	c.mu.Lock()
	d.Attempts++
	delay := s.retryDelay()
	for i := 1; i < d.Attempts && delay < maxReportRetryDelay; i++ {
		delay *= 2
	}
	delay = min(delay, maxReportRetryDelay)
	delay += rand.N(delay/4 + 1) // jitter, so that retries spread too
	next := now.Add(delay)
	permanent := errors.Is(err, ErrInvalidReport)
	if !permanent && !next.After(d.Deadline) {
		d.Next = next
		c.gen++
		c.mu.Unlock()
		c.save()
		return
	}
	attempts := d.Attempts
	c.mu.Unlock()
	if !permanent {
		err = fmt.Errorf("giving up after %d attempts: %w", attempts, err)
	}
	s.giveUp(d, err)
	c.replace(d)
}

func (s *ReportSender) giveUp(d *delivery, err error) {
	if s.OnError != nil {
		s.OnError(d.Domain, d.Report, err)
	}
}

func (s *ReportSender) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return s.Collector.now()
}

// resolver returns Resolver, or the sender's own zero one. s.mu is held.
func (s *ReportSender) resolver() *Resolver {
	if s.Resolver != nil {
		return s.Resolver
	}
	if s.zeroResolver == nil {
		s.zeroResolver = &Resolver{}
	}
	return s.zeroResolver
}

func (s *ReportSender) spread() time.Duration   { return orDefault(s.Spread, DefaultReportSpread) }
func (s *ReportSender) retryFor() time.Duration { return orDefault(s.RetryFor, DefaultReportRetryFor) }
func (s *ReportSender) retryDelay() time.Duration {
	return orDefault(s.RetryDelay, DefaultReportRetryDelay)
}

// orDefault returns d, or def if d is not positive.
func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// queueFinished takes the reports of the days that ended by now and queues
// each for delivery at a random time within spread after its day's end, in
// the same write to Store.
func (c *ReportCollector) queueFinished(now time.Time, spread time.Duration) {
	if c.checkConfig() != nil {
		return
	}
	c.load()
	c.mu.Lock()
	reports := c.takeLocked(func(start time.Time) bool { return !now.Before(start.Add(24 * time.Hour)) })
	for _, r := range reports {
		end := r.DateRange.Start.Add(24 * time.Hour)
		c.outbox = append(c.outbox, &delivery{
			Report:    r,
			Submitter: r.Submitter,
			Domain:    r.policyDomain(),
			Next:      end.Add(rand.N(spread)),
		})
	}
	if len(reports) > 0 {
		c.gen++
	}
	c.mu.Unlock()
	c.save()
}

// due returns the deliveries whose time has come by now, earliest first.
func (c *ReportCollector) due(now time.Time) []*delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	var due []*delivery
	for _, d := range c.outbox {
		if !d.Next.After(now) {
			due = append(due, d)
		}
	}
	slices.SortStableFunc(due, func(a, b *delivery) int { return a.Next.Compare(b.Next) })
	return due
}

// nextDue returns the time of the earliest delivery, or the end of now's
// day, when the next reports are due to be queued, if that is earlier.
func (c *ReportCollector) nextDue(now time.Time) time.Time {
	next := utcDay(now).Add(24 * time.Hour)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, d := range c.outbox {
		if d.Next.Before(next) {
			next = d.Next
		}
	}
	return next
}

// replace removes d from the outbox and adds with in its place, in one write
// to Store.
func (c *ReportCollector) replace(d *delivery, with ...*delivery) {
	c.mu.Lock()
	c.outbox = slices.DeleteFunc(c.outbox, func(o *delivery) bool { return o == d })
	c.outbox = append(c.outbox, with...)
	c.gen++
	c.mu.Unlock()
	c.save()
}
