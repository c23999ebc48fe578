package mtasts_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/mail"
	"net/netip"
	"strings"
	"time"

	"github.com/seedc2a895ea/mtasts"
	"github.com/seedc2a895ea/mtasts/mtaststest"
)

// A sender feeds the collector one result per session, successes included,
// and once a day sends the finished reports where each domain's TLSRPT record
// says: by HTTPS POST and by mail. Here fabrikam.com's record names an https:
// and a mailto: destination on a fake world on loopback, and a Clock stands
// for the day passing.
func ExampleReportCollector() {
	world := mtaststest.NewServer()
	defer world.Close()
	world.SetTXT("_smtp._tls.fabrikam.com", []string{"v=TLSRPTv1; rua=https://tlsrpt.fabrikam.com/v1,mailto:tlsrpt@fabrikam.com"})
	// The domain's report endpoint: it passes on each report it gets,
	// decompressed.
	posts := make(chan string, 1)
	world.Handle("tlsrpt.fabrikam.com", http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var body []byte
		zr, err := gzip.NewReader(req.Body)
		if err == nil {
			body, _ = io.ReadAll(zr)
		}
		select {
		case posts <- req.URL.Path + " " + req.Header.Get("Content-Type") + "\n" + string(body):
		default:
		}
		w.WriteHeader(http.StatusCreated)
	}))

	ctx := context.Background()
	var posted []byte // the JSON document of the report posted
	clock := mtaststest.NewClock(time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC))
	resolver := world.Resolver() // in production: the sender's one mtasts.Resolver
	collector := &mtasts.ReportCollector{
		OrganizationName: "Contoso",
		ContactInfo:      "tlsrpt-admin@contoso.com",
		Submitter:        "mail.contoso.com",
		Now:              clock.Now, // in production: nil, the real time
	}

	// After each session with an MX host of fabrikam.com: here two that
	// went well, and one with an MX host whose EHLO offered no STARTTLS.
	policy := &mtasts.Policy{Domain: "fabrikam.com", Mode: mtasts.ModeTesting, MX: []string{"*.fabrikam.com"}, MaxAge: 24 * time.Hour}
	noSTARTTLS := fmt.Errorf("%w: mx1.fabrikam.com", mtasts.ErrNoSTARTTLS)
	for _, sessionErr := range []error{nil, nil, noSTARTTLS} {
		err := collector.Add(mtasts.SessionResult{
			Domain:      "fabrikam.com",
			Policy:      policy,
			Err:         sessionErr, // nil: a successful session
			MXHost:      "mx1.fabrikam.com",
			SendingIP:   netip.MustParseAddr("192.0.2.25"),
			ReceivingIP: netip.MustParseAddr("198.51.100.10"),
		})
		if err != nil {
			log.Print(err) // not a failure of the domain's
		}
	}
	fmt.Println("finished before midnight:", len(collector.TakeFinished()))

	// Once a day, after midnight UTC:
	clock.Advance(12 * time.Hour)
	for _, report := range collector.TakeFinished() {
		rec, err := resolver.LookupTLSRPT(ctx, report.Policies[0].Policy.Domain)
		if err != nil {
			continue // no TLSRPT record: no report
		}
		for _, uri := range rec.HTTPS() {
			// In production a nil client: the system roots.
			if err := mtasts.PostReport(ctx, world.Client(), uri, report); err != nil {
				fmt.Println(err) // retry later, for up to a day
				continue
			}
			post := <-posts
			path, body, _ := strings.Cut(post, "\n")
			fmt.Println("POST", path)
			posted = []byte(body)
		}
		if to := rec.Mailto(); len(to) > 0 {
			msg, err := report.Mail("tlsrpt@mail.contoso.com", to, clock.Now())
			if err != nil {
				log.Fatal(err)
			}
			// DKIM-sign msg and submit it; here, a look at its header.
			m, err := mail.ReadMessage(bytes.NewReader(msg))
			if err != nil {
				log.Fatal(err)
			}
			fmt.Println("mail to", m.Header.Get("To"), "for", m.Header.Get("TLS-Report-Domain"), "from", m.Header.Get("TLS-Report-Submitter"))
		}
	}

	// What the endpoint received: the RFC 8460 JSON document.
	var doc struct {
		DateRange struct {
			Start time.Time `json:"start-datetime"`
		} `json:"date-range"`
		Policies []struct {
			Policy struct {
				Type   string `json:"policy-type"`
				Domain string `json:"policy-domain"`
			} `json:"policy"`
			Summary struct {
				Successful int `json:"total-successful-session-count"`
				Failed     int `json:"total-failure-session-count"`
			} `json:"summary"`
			FailureDetails []struct {
				ResultType string `json:"result-type"`
				MXHost     string `json:"receiving-mx-hostname"`
				Count      int    `json:"failed-session-count"`
			} `json:"failure-details"`
		} `json:"policies"`
	}
	if err := json.Unmarshal(posted, &doc); err != nil || len(doc.Policies) != 1 {
		log.Fatal(errors.Join(errors.New("no report posted"), err))
	}
	pr := doc.Policies[0]
	fmt.Printf("%s %s (%s): %d successful, %d failed\n", doc.DateRange.Start.Format(time.DateOnly),
		pr.Policy.Domain, pr.Policy.Type, pr.Summary.Successful, pr.Summary.Failed)
	for _, fd := range pr.FailureDetails {
		fmt.Printf("  %s at %s: %d\n", fd.ResultType, fd.MXHost, fd.Count)
	}
	// Output:
	// finished before midnight: 0
	// POST /v1 application/tlsrpt+gzip
	// mail to tlsrpt@fabrikam.com for fabrikam.com from mail.contoso.com
	// 2024-05-01 fabrikam.com (sts): 2 successful, 1 failed
	//   starttls-not-supported at mx1.fabrikam.com: 1
}
