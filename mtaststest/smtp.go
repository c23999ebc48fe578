package mtaststest

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"time"
)

// An MXMode says how an MX started with StartMX answers STARTTLS.
type MXMode int

const (
	// MXSTARTTLS offers STARTTLS and completes it with the MX's certificate.
	MXSTARTTLS MXMode = iota

	// MXNoSTARTTLS does not offer STARTTLS, as an MX behind an attacker who
	// strips it from the EHLO answer (RFC 8461 §10.1's downgrade).
	MXNoSTARTTLS

	// MXRefuseSTARTTLS offers STARTTLS but answers it "454 4.7.0 TLS not
	// available" (RFC 3207 §4).
	MXRefuseSTARTTLS
)

// A Message is what an MX accepted: the envelope, the data, and how the
// session was protected.
type Message struct {
	From       string
	To         []string
	Data       string // as received, CRLF line endings, without the final "."
	TLS        bool   // the message came over TLS
	ServerName string // the SNI the client sent, over TLS
	TLSVersion uint16 // over TLS
}

// An MX is a receiving SMTP server on 127.0.0.1 standing in for one MX host
// of a test: it answers EHLO, HELO, STARTTLS (as its MXMode says, with a
// certificate of its CertKind from the Server's CA), MAIL, RCPT, DATA, RSET,
// NOOP and QUIT, and keeps the messages it accepts. A sender reaches it
// through Server.DialMX, which maps "<host>:25" to it. Stop it with Close, or
// let Server.Close stop it.
type MX struct {
	Host string // the MX host name it stands in for
	Addr string // host:port on 127.0.0.1

	mode MXMode
	tls  *tls.Config
	ln   net.Listener
	wg   sync.WaitGroup

	// mu guards everything below.
	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]bool
	got    []Message
}

// StartMX starts an MX for host: an SMTP server on 127.0.0.1 whose STARTTLS,
// if mode offers it, presents a certificate of the given kind for host,
// issued by the Server's CA (so that RootCAs verifies a CertGood one). Mail
// for a domain reaches it once SetMX names host for the domain and the sender
// dials through DialMX. Starting a second MX for a host closes the first.
// StartMX panics if it cannot listen.
func (s *Server) StartMX(host string, kind CertKind, mode MXMode) *MX {
	host = hostName(host)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic("mtaststest: starting an MX for " + host + ": " + err.Error())
	}
	m := &MX{Host: host, Addr: ln.Addr().String(), mode: mode, ln: ln, conns: map[net.Conn]bool{}}
	if mode != MXNoSTARTTLS {
		cert := s.ca.Issue(host, kind)
		m.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	m.wg.Add(1)
	go m.serve()
	s.mu.Lock()
	if s.mxs == nil {
		s.mxs = map[string]*MX{}
	}
	old := s.mxs[host]
	s.mxs[host] = m
	s.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return m
}

// DialMX connects to the MX started for the host of addr ("<host>:25"),
// whatever address DNS would give it, as a sender's dialer in a test. It
// refuses other ports and hosts without an MX, as a host that listens on no
// port 25 does.
func (s *Server) DialMX(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	s.mu.Lock()
	m := s.mxs[hostName(host)]
	s.mu.Unlock()
	if m == nil || port != "25" {
		return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("connection refused: no MX started for %s", addr)}
	}
	var d net.Dialer
	return d.DialContext(ctx, network, m.Addr)
}

// Messages returns the messages the MX accepted, in order.
func (m *MX) Messages() []Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Message(nil), m.got...)
}

// Close stops the MX and closes its sessions, and waits for them to end.
func (m *MX) Close() {
	m.mu.Lock()
	m.closed = true
	for c := range m.conns {
		c.Close()
	}
	m.mu.Unlock()
	m.ln.Close()
	m.wg.Wait()
}

func (m *MX) serve() {
	defer m.wg.Done()
	for {
		c, err := m.ln.Accept()
		if err != nil {
			return
		}
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			c.Close()
			return
		}
		m.conns[c] = true
		m.mu.Unlock()
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.session(c)
			m.mu.Lock()
			delete(m.conns, c)
			m.mu.Unlock()
			c.Close()
		}()
	}
}

// session runs one SMTP session on c (RFC 5321, RFC 3207 for STARTTLS).
func (m *MX) session(c net.Conn) {
	c.SetDeadline(time.Now().Add(time.Minute))
	tc := textproto.NewConn(c)
	var (
		state  *tls.ConnectionState
		from   string
		to     []string
		inMail bool
	)
	reply := func(code int, lines ...string) error {
		for i, l := range lines {
			sep := " "
			if i < len(lines)-1 {
				sep = "-"
			}
			if err := tc.PrintfLine("%d%s%s", code, sep, l); err != nil {
				return err
			}
		}
		return nil
	}
	if reply(220, m.Host+" ESMTP mtaststest") != nil {
		return
	}
	for {
		line, err := tc.ReadLine()
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			lines := []string{m.Host, "PIPELINING", "8BITMIME"}
			if m.mode != MXNoSTARTTLS && state == nil {
				lines = append(lines, "STARTTLS")
			}
			err = reply(250, lines...)
		case "HELO":
			err = reply(250, m.Host)
		case "STARTTLS":
			switch {
			case m.mode == MXNoSTARTTLS || state != nil:
				err = reply(502, "5.5.1 STARTTLS not offered")
			case m.mode == MXRefuseSTARTTLS:
				err = reply(454, "4.7.0 TLS not available")
			default:
				if err = reply(220, "2.0.0 Ready to start TLS"); err != nil {
					return
				}
				t := tls.Server(c, m.tls)
				if t.Handshake() != nil {
					return // a sender that refused the certificate hangs up
				}
				s := t.ConnectionState()
				state, c = &s, t
				tc = textproto.NewConn(t)
				from, to, inMail = "", nil, false // RFC 3207 §4.2: start afresh
			}
		case "MAIL":
			p, ok := mailPath(arg, "FROM:")
			if !ok {
				err = reply(501, "5.5.4 MAIL FROM:<address> expected")
				break
			}
			from, to, inMail = p, nil, true
			err = reply(250, "2.1.0 OK")
		case "RCPT":
			p, ok := mailPath(arg, "TO:")
			switch {
			case !inMail:
				err = reply(503, "5.5.1 MAIL first")
			case !ok || p == "":
				err = reply(501, "5.5.4 RCPT TO:<address> expected")
			default:
				to = append(to, p)
				err = reply(250, "2.1.5 OK")
			}
		case "DATA":
			if !inMail || len(to) == 0 {
				err = reply(503, "5.5.1 RCPT first")
				break
			}
			if err = reply(354, "End data with <CR><LF>.<CR><LF>"); err != nil {
				return
			}
			data, rerr := io.ReadAll(tc.DotReader())
			if rerr != nil {
				return
			}
			msg := Message{From: from, To: to, Data: strings.ReplaceAll(string(data), "\n", "\r\n")}
			if state != nil {
				msg.TLS, msg.ServerName, msg.TLSVersion = true, state.ServerName, state.Version
			}
			m.mu.Lock()
			m.got = append(m.got, msg)
			m.mu.Unlock()
			from, to, inMail = "", nil, false
			err = reply(250, "2.0.0 OK")
		case "RSET":
			from, to, inMail = "", nil, false
			err = reply(250, "2.0.0 OK")
		case "NOOP":
			err = reply(250, "2.0.0 OK")
		case "QUIT":
			reply(221, "2.0.0 Bye")
			return
		default:
			err = reply(500, "5.5.2 command not recognized")
		}
		if err != nil {
			return
		}
	}
}

// mailPath returns the address of a MAIL or RCPT argument, such as
// "FROM:<a@example.com> SIZE=10" with prefix "FROM:": what is between the
// angle brackets, parameters ignored.
func mailPath(arg, prefix string) (string, bool) {
	if len(arg) < len(prefix) || !strings.EqualFold(arg[:len(prefix)], prefix) {
		return "", false
	}
	rest := strings.TrimSpace(arg[len(prefix):])
	if !strings.HasPrefix(rest, "<") {
		return "", false
	}
	p, _, ok := strings.Cut(rest[1:], ">")
	return p, ok
}
