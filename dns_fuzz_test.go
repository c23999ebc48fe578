package mtasts

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// fuzzQName is the name FuzzDNSAnswer looks up.
const fuzzQName = "_mta-sts.d.example."

// fuzzMsg packs an answer to a TXT query for qname, for FuzzDNSAnswer's seeds.
func fuzzMsg(f *testing.F, qname string, rcode int, rrs ...string) []byte {
	f.Helper()
	q := new(dns.Msg)
	q.SetQuestion(qname, dns.TypeTXT)
	q.Id = 1
	m := new(dns.Msg)
	m.SetRcode(q, rcode)
	for _, s := range rrs {
		rr, err := dns.NewRR(s)
		if err != nil {
			f.Fatal(err)
		}
		if rr.Header().Rrtype == dns.TypeSOA {
			m.Ns = append(m.Ns, rr)
		} else {
			m.Answer = append(m.Answer, rr)
		}
	}
	b, err := m.Pack()
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// FuzzDNSAnswer feeds arbitrary bytes to resolveTXT and selectRecord as the
// answers of the name server: first is the answer to the query for
// fuzzQName, second the answer to the query that follows a CNAME chain the
// first leaves unresolved. Whatever the bytes, resolving must not panic, ask
// more than maxCNAMEs+1 times, or return anything the answers did not hold.
func FuzzDNSAnswer(f *testing.F) {
	const (
		soa    = "d.example. 300 IN SOA ns.d.example. host.d.example. 1 7200 900 1209600 60"
		target = "sts.provider.example."
	)
	none := []byte(nil)
	f.Add(fuzzMsg(f, fuzzQName, dns.RcodeSuccess, fuzzQName+` 300 IN TXT "v=STSv1; id=20160831085700Z;"`), none)
	f.Add(fuzzMsg(f, fuzzQName, dns.RcodeSuccess, fuzzQName+` 300 IN TXT "v=STSv1; " "id=ab" "c;"`,
		fuzzQName+` 60 IN TXT "v=spf1 -all"`), none)
	f.Add(fuzzMsg(f, fuzzQName, dns.RcodeSuccess, fuzzQName+` 300 IN TXT "v=STSv1;\009id=1;\255\"\\"`), none)
	f.Add(fuzzMsg(f, fuzzQName, dns.RcodeSuccess, fuzzQName+` 300 IN TXT "v=STSv1; id=1;"`,
		fuzzQName+` 300 IN TXT "v=STSv1; id=2;"`), none)
	f.Add(fuzzMsg(f, fuzzQName, dns.RcodeNameError, soa), none)
	f.Add(fuzzMsg(f, fuzzQName, dns.RcodeSuccess, soa), none)
	f.Add(fuzzMsg(f, fuzzQName, dns.RcodeServerFailure), none)
	f.Add(fuzzMsg(f, "_mta-sts.other.example.", dns.RcodeSuccess, `_mta-sts.other.example. 300 IN TXT "v=STSv1; id=1;"`), none)
	f.Add(fuzzMsg(f, fuzzQName, dns.RcodeSuccess, `_mta-sts.other.example. 300 IN TXT "v=STSv1; id=1;"`), none)
	// A CNAME chain within one answer, then one that needs a second query.
	f.Add(fuzzMsg(f, fuzzQName, dns.RcodeSuccess, fuzzQName+" 300 IN CNAME _mta-sts.hop.example.",
		"_mta-sts.hop.example. 200 IN CNAME "+target, target+` 100 IN TXT "v=STSv1; id=1;"`), none)
	f.Add(fuzzMsg(f, fuzzQName, dns.RcodeSuccess, fuzzQName+" 300 IN CNAME "+target),
		fuzzMsg(f, target, dns.RcodeSuccess, target+` 100 IN TXT "v=STSv1; id=1;"`))
	f.Add(fuzzMsg(f, fuzzQName, dns.RcodeSuccess, fuzzQName+" 300 IN CNAME "+target),
		fuzzMsg(f, target, dns.RcodeNameError, soa))
	// Loops: within the answer, and back to the name first asked.
	f.Add(fuzzMsg(f, fuzzQName, dns.RcodeSuccess, fuzzQName+" 300 IN CNAME "+target, target+" 300 IN CNAME "+fuzzQName), none)
	f.Add(fuzzMsg(f, fuzzQName, dns.RcodeSuccess, fuzzQName+" 300 IN CNAME "+target),
		fuzzMsg(f, target, dns.RcodeSuccess, target+" 300 IN CNAME "+fuzzQName))
	f.Add([]byte("\x00\x01\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00"), none) // counts larger than the message
	f.Add([]byte{}, []byte{0xff})

	f.Fuzz(func(t *testing.T, first, second []byte) {
		answers := [][]byte{first, second}
		var msgs []*dns.Msg // those that unpacked
		for _, b := range answers {
			m := new(dns.Msg)
			if m.Unpack(b) == nil {
				msgs = append(msgs, m)
			}
		}
		run := func() ([]string, time.Duration, error, int) {
			asked := 0
			exchange := func(ctx context.Context, qname string) (*dns.Msg, error) {
				i := asked
				asked++
				if i >= len(answers) {
					return nil, fmt.Errorf("%w: no answer %d", ErrDNSTemporary, i)
				}
				// As exchange does: the wire bytes, unpacked, then checked.
				resp := new(dns.Msg)
				if err := resp.Unpack(answers[i]); err != nil {
					return nil, fmt.Errorf("%w: %w", ErrDNSTemporary, err)
				}
				q := new(dns.Msg)
				q.SetQuestion(qname, dns.TypeTXT)
				q.Id = resp.Id
				if err := checkReply(q, resp); err != nil {
					return nil, fmt.Errorf("%w: %w", ErrDNSTemporary, err)
				}
				return resp, nil
			}
			txts, ttl, err := resolveTXT(context.Background(), fuzzQName, exchange)
			return txts, ttl, err, asked
		}
		txts, ttl, err, asked := run()

		if asked > maxCNAMEs+1 {
			t.Fatalf("%d queries, want at most %d", asked, maxCNAMEs+1)
		}
		if ttl < 0 || ttl > time.Duration(1<<32-1)*time.Second {
			t.Fatalf("TTL %v", ttl)
		}
		noRecord, temporary := errors.Is(err, ErrNoRecord), errors.Is(err, ErrDNSTemporary)
		switch {
		case err == nil:
			if len(txts) == 0 {
				t.Fatal("no error and no TXT records")
			}
			// Each record returned is one the answers held at the name
			// asked or at a name it leads to by CNAMEs, its strings joined
			// as they were on the wire, and the TTL no longer than its own.
			chain := map[string]bool{fuzzQName: true}
			for grew := true; grew; {
				grew = false
				for _, m := range msgs {
					for _, rr := range m.Answer {
						c, ok := rr.(*dns.CNAME)
						if !ok || !chain[strings.ToLower(c.Hdr.Name)] {
							continue
						}
						if to := strings.ToLower(c.Target); !chain[to] {
							chain[to], grew = true, true
						}
					}
				}
			}
			held := map[string]uint32{}
			for _, m := range msgs {
				for _, rr := range m.Answer {
					if txt, ok := rr.(*dns.TXT); ok && chain[strings.ToLower(txt.Hdr.Name)] {
						s := wireTXT(t, txt)
						held[s] = max(held[s], txt.Hdr.Ttl)
					}
				}
			}
			for _, s := range txts {
				recTTL, ok := held[s]
				if !ok {
					t.Fatalf("TXT %q is not in the answers", s)
				}
				if ttl > time.Duration(recTTL)*time.Second {
					t.Fatalf("TTL %v, longer than %q's %d s", ttl, s, recTTL)
				}
			}
		case noRecord == temporary:
			t.Fatalf("error %v: want ErrNoRecord or ErrDNSTemporary, not both or neither", err)
		case txts != nil:
			t.Fatalf("error %v with records %q", err, txts)
		case temporary && ttl != 0:
			t.Fatalf("temporary failure %v with TTL %v", err, ttl)
		}

		// The same answers give the same result.
		txts2, ttl2, err2, asked2 := run()
		if fmt.Sprint(txts2, ttl2, err2, asked2) != fmt.Sprint(txts, ttl, err, asked) {
			t.Fatalf("second run: %q %v %v %d, first: %q %v %v %d", txts2, ttl2, err2, asked2, txts, ttl, err, asked)
		}

		// What discover then makes of the records.
		if err != nil {
			return
		}
		rec, err := selectRecord(fuzzQName, txts)
		var sts []string
		for _, s := range txts {
			if isSTSRecord(s) {
				sts = append(sts, s)
			}
		}
		switch {
		case len(sts) == 0 && !errors.Is(err, ErrNoRecord),
			len(sts) > 1 && !errors.Is(err, ErrMultipleRecords),
			len(sts) == 1 && err != nil && !errors.Is(err, ErrInvalidRecord):
			t.Fatalf("selectRecord(%q) = %v, with %d STS records", txts, err, len(sts))
		case err == nil && (rec == nil || !validID(rec.ID)):
			t.Fatalf("selectRecord(%q) = %v", txts, rec)
		case err != nil && rec != nil:
			t.Fatalf("selectRecord(%q) = %v, %v: a record with an error", txts, rec, err)
		}
	})
}

// wireTXT returns the strings of txt as they are on the wire, joined: it packs
// the record again and reads its RDATA, a series of length-prefixed strings,
// so that it does not rely on the presentation escapes that joinTXT undoes.
func wireTXT(t *testing.T, txt *dns.TXT) string {
	rr := &dns.TXT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeTXT, Class: dns.ClassINET}, Txt: txt.Txt}
	buf := make([]byte, dns.Len(rr)+1)
	off, err := dns.PackRR(rr, buf, 0, nil, false)
	if err != nil {
		t.Fatalf("packing %v again: %v", txt, err)
	}
	rdata := buf[1+10 : off] // after the root name and the fixed header fields
	var b bytes.Buffer
	for len(rdata) > 0 {
		n := int(rdata[0])
		if 1+n > len(rdata) {
			t.Fatalf("packing %v again gave bad RDATA %q", txt, rdata)
		}
		b.Write(rdata[1 : 1+n])
		rdata = rdata[1+n:]
	}
	if s := joinTXT(txt.Txt); s != b.String() {
		t.Fatalf("joinTXT(%q) = %q, want the wire strings %q", txt.Txt, s, b.String())
	}
	return strings.Clone(b.String())
}
