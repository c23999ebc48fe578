package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"strings"
	"sync"

	"github.com/seedc2a895ea/mtasts"
)

// probeAll probes every MX host, one after another.
func (dc *domainCheck) probeAll(ctx context.Context) {
	p := dc.patternsPolicy()
	for i := range dc.MX {
		m := &dc.MX[i]
		m.Probe = dc.c.probe(ctx, m.Host)
		pr := m.Probe
		switch {
		case !pr.Connected:
			dc.add(finding{Code: "mx-unreachable", Severity: "warning", Message: fmt.Sprintf("MX %s: %s", m.Host, pr.Error)})
		case pr.ResultType != "":
			code := "mx-tls"
			switch {
			case pr.ResultType == string(mtasts.ResultSTARTTLSNotSupported):
				code = "mx-starttls"
			case strings.HasPrefix(pr.Reason, "certificate-"):
				code = "mx-certificate"
			}
			f := finding{Code: code, Severity: "error", Message: fmt.Sprintf("MX %s: %s", m.Host, pr.Error), ResultType: pr.ResultType, Reason: pr.Reason}
			if p != nil && p.Mode != mtasts.ModeNone && p.CheckMX(m.Host) != nil {
				// One report per session, of its first failure: the name
				// (RFC 8461 §4.1) before the certificate (§4.2).
				f.ResultType, f.Reason = "", ""
				f.Message += " (reported as the name's failure, which comes first)"
			}
			dc.add(f)
		case pr.Error != "":
			dc.add(finding{Code: "mx-tls", Severity: "error", Message: fmt.Sprintf("MX %s: %s", m.Host, pr.Error)})
		case pr.Certificate != nil && pr.Certificate.DaysLeft < 14:
			dc.add(finding{Code: "mx-certificate-expiring", Severity: "warning",
				Message: fmt.Sprintf("MX %s: its certificate expires in %d days", m.Host, pr.Certificate.DaysLeft)})
		}
	}
}

// probe opens an SMTP session with host on port 25, sends EHLO and STARTTLS,
// checks the certificate for host as Policy.TLSConfig does, and QUITs.
// Nothing else is sent.
func (c *checker) probe(ctx context.Context, host string) *probeReport {
	pr := &probeReport{}
	ctx, cancel := context.WithTimeout(ctx, c.opts.timeout)
	defer cancel()
	conn, err := c.dialMX(ctx, "tcp", net.JoinHostPort(host, "25"))
	if err != nil {
		pr.Error = err.Error()
		return pr
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	bc := &bannerConn{Conn: conn}
	cl, err := smtp.NewClient(bc, host)
	if err != nil {
		pr.Error = err.Error()
		return pr
	}
	defer cl.Close()
	pr.Connected, pr.Banner = true, bc.banner()
	if err := cl.Hello(c.opts.ehlo); err != nil {
		pr.Error = "EHLO: " + err.Error()
		return pr
	}
	fail := func(err error) {
		typ, reason := mtasts.Classify(err)
		pr.Error, pr.ResultType, pr.Reason = err.Error(), string(typ), reason
	}
	if ok, _ := cl.Extension("STARTTLS"); !ok {
		fail(fmt.Errorf("%w: %s", mtasts.ErrNoSTARTTLS, host))
		cl.Quit()
		return pr
	}
	pr.STARTTLS = true
	// A testing policy verifies the certificate as an enforced one does
	// (RFC 8461 §4.2) but lets the handshake finish, so that the
	// certificate can be shown whatever is wrong with it.
	probePolicy := &mtasts.Policy{Mode: mtasts.ModeTesting}
	cfg, check := probePolicy.TLSConfig(host, &tls.Config{RootCAs: c.cfg.Roots, Time: c.cfg.Now})
	err = cl.StartTLS(cfg)
	var reply *textproto.Error
	switch {
	case errors.As(err, &reply):
		fail(mtasts.STARTTLSRefused(err))
		cl.Quit()
		return pr
	case err != nil:
		fail(err)
		return pr
	}
	if cs, ok := cl.TLSConnectionState(); ok {
		pr.TLSVersion = tls.VersionName(cs.Version)
		if len(cs.PeerCertificates) > 0 {
			ci := describeCert(cs.PeerCertificates[0], c.cfg.Now())
			pr.Certificate = &ci
		}
	}
	pr.Verified = check.Verified()
	if err := check.Err(); err != nil {
		fail(err)
	}
	cl.Quit()
	return pr
}

// bannerConn keeps the first line the server sends: its greeting.
type bannerConn struct {
	net.Conn
	mu   sync.Mutex
	buf  bytes.Buffer
	done bool
}

func (b *bannerConn) Read(p []byte) (int, error) {
	n, err := b.Conn.Read(p)
	b.mu.Lock()
	if !b.done {
		b.buf.Write(p[:n])
		b.done = bytes.Contains(b.buf.Bytes(), []byte("\n")) || b.buf.Len() > 512
	}
	b.mu.Unlock()
	return n, err
}

func (b *bannerConn) banner() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	line, _, _ := strings.Cut(b.buf.String(), "\n")
	return strings.TrimSpace(line)
}
