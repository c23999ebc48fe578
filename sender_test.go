package mtasts_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/smtp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/mtaststest"
)

// reportEndpoint is an HTTPS server on loopback that receives reports, as
// the https: destination of a TLSRPT record, with a certificate from its own
// authority that its Client trusts.
type reportEndpoint struct {
	URL    string // the destination: https://reports.example.net/tlsrpt
	Client *http.Client

	mu     sync.Mutex
	status []int    // the statuses to answer, in order; the last one repeats
	posts  [][]byte // the gzipped bodies received
	types  []string // their Content-Types
	server *httptest.Server
}

const reportHost = "reports.example.net"

// hang, as a status of a reportEndpoint, answers nothing until the client
// goes away.
const hang = -1

func newReportEndpoint(t *testing.T, status ...int) *reportEndpoint {
	t.Helper()
	e := &reportEndpoint{URL: "https://" + reportHost + "/tlsrpt", status: status}
	ca := mtaststest.NewCA()
	e.server = httptest.NewUnstartedServer(http.HandlerFunc(e.serve))
	e.server.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Issue(reportHost, mtaststest.CertGood)}}
	e.server.StartTLS()
	addr := e.server.Listener.Addr().String()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12},
	}
	e.Client = &http.Client{Transport: tr}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		e.server.Close()
	})
	return e
}

func (e *reportEndpoint) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil || r.Method != http.MethodPost || r.URL.Path != "/tlsrpt" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	e.mu.Lock()
	status := e.status[min(len(e.posts), len(e.status)-1)]
	e.posts = append(e.posts, body)
	e.types = append(e.types, r.Header.Get("Content-Type"))
	e.mu.Unlock()
	if status == hang {
		<-r.Context().Done()
		return
	}
	w.WriteHeader(status)
}

// Reports returns the reports received, decoded, and the Content-Types they
// came with.
func (e *reportEndpoint) Reports(t *testing.T) ([]mtasts.Report, []string) {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	var rs []mtasts.Report
	for _, p := range e.posts {
		zr, err := gzip.NewReader(bytes.NewReader(p))
		require.NoError(t, err)
		data, err := io.ReadAll(zr)
		require.NoError(t, err)
		var r mtasts.Report
		require.NoError(t, json.Unmarshal(data, &r))
		rs = append(rs, r)
	}
	return rs, append([]string(nil), e.types...)
}

// Posts returns the number of requests received.
func (e *reportEndpoint) Posts() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.posts)
}

// senderWorld is a ReportSender with everything it reaches on loopback: DNS
// publishing the TLSRPT records, an HTTPS endpoint, and an SMTP server that
// the sender's SubmitMail delivers to over STARTTLS.
type senderWorld struct {
	srv       *mtaststest.Server
	endpoint  *reportEndpoint
	mx        *mtaststest.MX
	clock     *mtaststest.Clock
	collector *mtasts.ReportCollector
	sender    *mtasts.ReportSender
	day       time.Time // the day whose sessions are reported

	mu     sync.Mutex
	failed []senderFailure
}

type senderFailure struct {
	domain string
	report *mtasts.Report
	err    error
}

const reportMX = "mx." + reportHost

func newSenderWorld(t *testing.T, status ...int) *senderWorld {
	t.Helper()
	if len(status) == 0 {
		status = []int{http.StatusOK}
	}
	srv := mtaststest.NewServer()
	t.Cleanup(srv.Close)
	w := &senderWorld{
		srv:      srv,
		endpoint: newReportEndpoint(t, status...),
		mx:       srv.StartMX(reportMX, mtaststest.CertGood, mtaststest.MXSTARTTLS),
		day:      time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC),
	}
	w.clock = mtaststest.NewClock(w.day.Add(10 * time.Hour))
	w.collector = newCollector(w.clock.Now)
	w.sender = w.newSender(w.collector)
	return w
}

// newSender returns a sender for c that reaches the world's servers.
func (w *senderWorld) newSender(c *mtasts.ReportCollector) *mtasts.ReportSender {
	return &mtasts.ReportSender{
		Collector:  c,
		Resolver:   w.srv.Resolver(),
		HTTPClient: w.endpoint.Client,
		SubmitMail: w.submitMail,
		From:       "tlsrpt@mail.sender.example",
		Spread:     2 * time.Hour,
		RetryDelay: 10 * time.Minute,
		OnError: func(domain string, r *mtasts.Report, err error) {
			w.mu.Lock()
			defer w.mu.Unlock()
			w.failed = append(w.failed, senderFailure{domain, r, err})
		},
	}
}

// submitMail sends a message with net/smtp to the MX of the reports'
// domain, over STARTTLS.
func (w *senderWorld) submitMail(ctx context.Context, from string, to []string, msg []byte) error {
	conn, err := w.srv.DialMX(ctx, "tcp", reportMX+":25")
	if err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	c, err := smtp.NewClient(conn, reportMX)
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	if err := c.Hello("mail.sender.example"); err != nil {
		return err
	}
	if err := c.StartTLS(&tls.Config{ServerName: reportMX, RootCAs: w.srv.RootCAs()}); err != nil {
		return err
	}
	if err := c.Mail(from); err != nil {
		return err
	}
	for _, a := range to {
		if err := c.Rcpt(a); err != nil {
			return err
		}
	}
	wc, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := wc.Write(msg); err != nil {
		return err
	}
	if err := wc.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// publish gives domain a TLSRPT record with the destinations rua.
func (w *senderWorld) publish(domain string, rua ...string) {
	w.srv.SetTXT("_smtp._tls."+domain, []string{"v=TLSRPTv1; rua=" + strings.Join(rua, ",")})
}

// add counts n sessions to domain on the world's day.
func (w *senderWorld) add(t *testing.T, domain string, n int) {
	t.Helper()
	for i := range n {
		require.NoError(t, w.collector.Add(mtasts.SessionResult{Domain: domain, Time: w.day.Add(time.Duration(i) * time.Minute)}))
	}
}

// at sets the clock to d after the end of the world's day and runs one turn
// of the sender.
func (w *senderWorld) at(d time.Duration) {
	w.clock.Set(w.day.Add(24*time.Hour + d))
	mtasts.SendDue(context.Background(), w.sender)
}

func (w *senderWorld) failures() []senderFailure {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]senderFailure(nil), w.failed...)
}

// After its day, a report is looked up, posted gzipped to the https:
// destination and mailed over SMTP to the mailto: one (RFC 8460 §5.3); a
// domain without a TLSRPT record gets nothing, and no error.
func TestReportSenderDelivers(t *testing.T) {
	t.Parallel()
	w := newSenderWorld(t)
	w.publish("example.com", w.endpoint.URL, "mailto:tlsrpt@"+reportHost)
	w.add(t, "example.com", 3)
	w.add(t, "norecord.example", 2)

	w.at(-time.Second) // the day is not over
	assert.Zero(t, w.endpoint.Posts())
	w.at(2 * time.Hour) // the end of the spread
	assert.Zero(t, mtasts.Undelivered(w.collector))
	assert.Empty(t, w.failures())

	reports, types := w.endpoint.Reports(t)
	require.Len(t, reports, 1)
	assert.Equal(t, []string{"application/tlsrpt+gzip"}, types)
	r := reports[0]
	assert.Equal(t, "example.com", r.Policies[0].Policy.Domain)
	assert.Equal(t, int64(3), r.Policies[0].Summary.TotalSuccessfulSessionCount)
	assert.Equal(t, w.day, r.DateRange.Start)

	msgs := w.mx.Messages()
	require.Len(t, msgs, 1)
	m := msgs[0]
	assert.True(t, m.TLS)
	assert.Equal(t, "tlsrpt@mail.sender.example", m.From)
	assert.Equal(t, []string{"tlsrpt@" + reportHost}, m.To)
	assert.Contains(t, m.Data, "TLS-Report-Domain: example.com\r\n")
	assert.Contains(t, m.Data, "Report-ID: <"+r.ReportID+">")
	assert.Contains(t, m.Data, "Content-Type: application/tlsrpt+gzip")
}

// The reports of a day are delivered over the spread that follows it, not
// all at midnight.
func TestReportSenderSpreads(t *testing.T) {
	t.Parallel()
	w := newSenderWorld(t)
	const domains = 24
	for i := range domains {
		d := fmt.Sprintf("d%d.example", i)
		w.publish(d, w.endpoint.URL)
		w.add(t, d, 1)
	}
	w.at(0)
	first := w.endpoint.Posts()
	w.at(time.Hour)
	half := w.endpoint.Posts()
	w.at(2 * time.Hour)
	all := w.endpoint.Posts()
	// Each report is due at a random time within the two hours: the chance
	// that none, or all, of 24 fall in the first hour is 2^-23.
	assert.Less(t, first, domains/2, "delivered at midnight")
	assert.Greater(t, half, 0)
	assert.Less(t, half, domains)
	assert.Equal(t, domains, all)
	assert.Empty(t, w.failures())
}

// A destination that fails is retried with backoff; the report is delivered
// once it answers 200, and nobody hears of the failure.
func TestReportSenderRetries(t *testing.T) {
	t.Parallel()
	w := newSenderWorld(t, http.StatusInternalServerError, http.StatusOK)
	w.publish("example.com", w.endpoint.URL)
	w.add(t, "example.com", 1)

	w.at(2 * time.Hour)
	assert.Equal(t, 1, w.endpoint.Posts())
	assert.Equal(t, 1, mtasts.Undelivered(w.collector))
	w.at(2*time.Hour + 5*time.Minute) // before the retry delay
	assert.Equal(t, 1, w.endpoint.Posts())
	w.at(2*time.Hour + 13*time.Minute) // after it and its jitter
	assert.Equal(t, 2, w.endpoint.Posts())
	assert.Zero(t, mtasts.Undelivered(w.collector))
	assert.Empty(t, w.failures())
	reports, _ := w.endpoint.Reports(t)
	assert.Equal(t, reports[0].ReportID, reports[1].ReportID)
}

// A destination that fails for the whole retry time is given up, and the
// report passed to OnError; the other destination still gets it.
func TestReportSenderGivesUp(t *testing.T) {
	t.Parallel()
	w := newSenderWorld(t, http.StatusServiceUnavailable)
	w.sender.RetryFor = 3 * time.Hour
	w.publish("example.com", w.endpoint.URL, "mailto:tlsrpt@"+reportHost)
	w.add(t, "example.com", 1)

	for d := 2 * time.Hour; d < 7*time.Hour && len(w.failures()) == 0; d += 5 * time.Minute {
		w.at(d)
	}
	failed := w.failures()
	require.Len(t, failed, 1)
	assert.Equal(t, "example.com", failed[0].domain)
	assert.ErrorIs(t, failed[0].err, mtasts.ErrReportDelivery)
	assert.ErrorContains(t, failed[0].err, "503")
	assert.Equal(t, w.day, failed[0].report.DateRange.Start)
	// 10, 20, 40 and 80 minutes of backoff, and their jitter, within 3 hours.
	assert.GreaterOrEqual(t, w.endpoint.Posts(), 3)
	assert.LessOrEqual(t, w.endpoint.Posts(), 5)
	assert.Zero(t, mtasts.Undelivered(w.collector))
	assert.Len(t, w.mx.Messages(), 1)
}

// What a sender has not delivered is in the collector's Store: a sender
// started on the same directory, as after a restart, delivers it, with the
// same report id.
func TestReportSenderSurvivesRestart(t *testing.T) {
	t.Parallel()
	w := newSenderWorld(t, http.StatusInternalServerError, http.StatusOK)
	dir := t.TempDir()
	w.collector.Store = mtasts.DirCache(dir)
	w.publish("example.com", w.endpoint.URL)
	w.add(t, "example.com", 4)
	w.at(2 * time.Hour)
	require.Equal(t, 1, w.endpoint.Posts())

	restarted, errs := storedCollector(dir, w.clock.Now)
	w.sender = w.newSender(restarted)
	require.Equal(t, 1, mtasts.Undelivered(restarted))
	w.at(3 * time.Hour)
	assert.Zero(t, mtasts.Undelivered(restarted))
	assert.Empty(t, errs())
	assert.Empty(t, w.failures())
	reports, _ := w.endpoint.Reports(t)
	require.Len(t, reports, 2)
	assert.Equal(t, reports[0].ReportID, reports[1].ReportID)
	assert.Equal(t, int64(4), reports[1].Policies[0].Summary.TotalSuccessfulSessionCount)

	again, _ := storedCollector(dir, w.clock.Now)
	assert.Zero(t, mtasts.Undelivered(again))
}

// Destinations the sender cannot deliver to are passed to OnError at once.
func TestReportSenderUndeliverable(t *testing.T) {
	t.Parallel()
	w := newSenderWorld(t)
	w.sender.SubmitMail = nil
	w.publish("mailonly.example", "mailto:tlsrpt@"+reportHost)
	w.publish("other.example", "ftp://reports.example.net/x")
	w.add(t, "mailonly.example", 1)
	w.add(t, "other.example", 1)
	w.at(2 * time.Hour)
	failed := map[string]error{}
	for _, f := range w.failures() {
		failed[f.domain] = f.err
	}
	require.Len(t, failed, 2)
	assert.ErrorIs(t, failed["mailonly.example"], mtasts.ErrReportDelivery)
	assert.ErrorContains(t, failed["mailonly.example"], "no SubmitMail")
	assert.ErrorIs(t, failed["other.example"], mtasts.ErrReportDelivery)
	assert.ErrorContains(t, failed["other.example"], "no https: or mailto: destination")
	assert.Zero(t, mtasts.Undelivered(w.collector))
}

// Run delivers on its own once the day is over, and returns when its
// context ends, leaving nothing running.
func TestReportSenderRun(t *testing.T) {
	t.Parallel()
	w := newSenderWorld(t)
	w.sender.Spread = time.Nanosecond
	w.publish("example.com", w.endpoint.URL, "mailto:tlsrpt@"+reportHost)
	w.add(t, "example.com", 1)
	w.clock.Set(w.day.Add(24 * time.Hour))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.sender.Run(ctx) }()
	require.Eventually(t, func() bool {
		return w.endpoint.Posts() == 1 && len(w.mx.Messages()) == 1
	}, 10*time.Second, 10*time.Millisecond)
	cancel()
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	assert.Empty(t, w.failures())
	assert.Error(t, (&mtasts.ReportSender{}).Run(context.Background()))
}

// A TLSRPT lookup that fails for now (SERVFAIL) is retried like a delivery;
// the report goes out once DNS answers.
func TestReportSenderRetriesLookup(t *testing.T) {
	t.Parallel()
	w := newSenderWorld(t)
	w.publish("example.com", w.endpoint.URL)
	w.srv.SetDNSFault("_smtp._tls.example.com", mtaststest.DNSServFail)
	w.add(t, "example.com", 1)

	w.at(2 * time.Hour)
	assert.Zero(t, w.endpoint.Posts())
	assert.Equal(t, 1, mtasts.Undelivered(w.collector))
	w.srv.SetDNSFault("_smtp._tls.example.com", mtaststest.DNSOK)
	w.at(3 * time.Hour)
	assert.Equal(t, 1, w.endpoint.Posts())
	assert.Zero(t, mtasts.Undelivered(w.collector))
	assert.Empty(t, w.failures())
}

// Sessions added while the sender delivers the day before are all counted,
// in the next day's report; the state the collector stores is written by
// both at once.
func TestReportSenderConcurrentAdds(t *testing.T) {
	t.Parallel()
	w := newSenderWorld(t)
	dir := t.TempDir()
	w.collector.Store = mtasts.DirCache(dir)
	const domains = 8
	for i := range domains {
		d := fmt.Sprintf("d%d.example", i)
		w.publish(d, w.endpoint.URL)
		w.add(t, d, 1)
	}
	w.clock.Set(w.day.Add(26 * time.Hour))
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for range 50 {
				assert.NoError(t, w.collector.Add(mtasts.SessionResult{Domain: fmt.Sprintf("d%d.example", g)}))
			}
		})
	}
	wg.Go(func() {
		for range 5 {
			mtasts.SendDue(context.Background(), w.sender)
		}
	})
	wg.Wait()
	assert.Equal(t, domains, w.endpoint.Posts())
	assert.Empty(t, w.failures())

	restarted, errs := storedCollector(dir, w.clock.Now)
	assert.Zero(t, mtasts.Undelivered(restarted))
	var total int64
	for _, r := range restarted.TakeAll() {
		total += r.Policies[0].Summary.TotalSuccessfulSessionCount
	}
	assert.Equal(t, int64(4*50), total)
	assert.Empty(t, errs())
}

// A Run stopped in the middle of a delivery returns once it has stopped;
// the report stays to be delivered, its attempt not counted.
func TestReportSenderRunStopsMidDelivery(t *testing.T) {
	t.Parallel()
	w := newSenderWorld(t, hang, http.StatusOK)
	w.sender.Spread = time.Nanosecond
	w.sender.RetryFor = time.Minute // a counted attempt would be the last
	w.publish("example.com", w.endpoint.URL)
	w.add(t, "example.com", 1)
	w.clock.Set(w.day.Add(24 * time.Hour))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.sender.Run(ctx) }()
	require.Eventually(t, func() bool { return w.endpoint.Posts() == 1 }, 10*time.Second, 10*time.Millisecond)
	cancel()
	select {
	case err := <-done:
		assert.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	assert.Equal(t, 1, mtasts.Undelivered(w.collector))

	mtasts.SendDue(context.Background(), w.sender)
	assert.Equal(t, 2, w.endpoint.Posts())
	assert.Zero(t, mtasts.Undelivered(w.collector))
	assert.Empty(t, w.failures())
}
