package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

func writeJSON(w io.Writer, out output) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(out)
}

// ANSI colours, used only on a terminal.
const (
	red    = "\x1b[31m"
	yellow = "\x1b[33m"
	green  = "\x1b[32m"
	bold   = "\x1b[1m"
	reset  = "\x1b[0m"
)

// textWriter writes the report for people: one section per step, values
// aligned.
type textWriter struct {
	tw    *tabwriter.Writer
	color bool
}

func (t *textWriter) paint(c, s string) string {
	if !t.color {
		return s
	}
	return c + s + reset
}

func (t *textWriter) head(s string) { fmt.Fprintf(t.tw, "%s\n", t.paint(bold, s)) }

// kv writes an indented "key<tab>value" line.
func (t *textWriter) kv(key, format string, args ...any) {
	fmt.Fprintf(t.tw, "  %s\t%s\n", key, fmt.Sprintf(format, args...))
}

func writeText(w io.Writer, out output, color bool) error {
	t := &textWriter{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0), color: color}
	for i, d := range out.Domains {
		if i > 0 {
			fmt.Fprintln(t.tw)
		}
		t.domain(d)
	}
	return t.tw.Flush()
}

func (t *textWriter) domain(d domainReport) {
	t.head("== " + d.Domain)
	if r := d.Record; r != nil {
		t.head("MTA-STS record")
		t.kv("name", "%s", r.Name)
		for _, cn := range r.CNAMEChain {
			t.kv("CNAME", "%s", cn)
		}
		if r.Error != "" {
			t.kv("error", "%s", t.paint(red, r.Error))
		}
		for _, rec := range r.Records {
			mark := "ignored"
			switch {
			case rec.Counted:
				mark = "counted"
			case rec.STS:
				mark = "STS"
			}
			t.kv("TXT "+mark, "%q", rec.Text)
			if rec.Error != "" {
				t.kv("", "%s", t.paint(red, rec.Error))
			}
		}
		if r.Why != "" {
			t.kv("result", "%s", r.Why)
		}
		if r.ID != "" {
			t.kv("id", "%s", r.ID)
		}
	}
	if f := d.Fetch; f != nil {
		t.head("Policy fetch")
		t.kv("URL", "%s", f.URL)
		if f.Status != 0 {
			t.kv("status", "%d", f.Status)
			t.kv("media type", "%s", f.MediaType)
			t.kv("size", "%d bytes", f.Size)
			t.kv("TLS", "%s", f.TLSVersion)
		}
		if f.Redirect != "" {
			t.kv("redirect", "%s (refused)", f.Redirect)
		}
		for i, c := range f.Certificates {
			t.cert("certificate "+strconv.Itoa(i), c)
		}
		if f.Error != "" {
			t.kv("error", "%s", t.paint(red, f.Error))
		}
	}
	if p := d.Policy; p != nil {
		t.head("Policy")
		if len(p.Problems) == 0 {
			t.kv("mode", "%s", p.Mode)
			t.kv("max_age", "%d (%s)", p.MaxAge, age(p.MaxAge))
			for _, mx := range p.MX {
				t.kv("mx", "%s", mx)
			}
		} else {
			for i, line := range strings.Split(strings.TrimSuffix(p.Text, "\n"), "\n") {
				t.kv(strconv.Itoa(i+1), "%s", line)
			}
			for _, pb := range p.Problems {
				t.kv("problem", "%s", t.paint(red, pb.Error))
			}
		}
	}
	if len(d.MX) > 0 {
		t.head("MX hosts")
		for _, m := range d.MX {
			match := t.paint(red, "matches no pattern")
			if !d.HasPatterns {
				match = "no policy to match"
			} else if m.Pattern != "" {
				match = "matches " + m.Pattern
			}
			t.kv(fmt.Sprintf("%d %s", m.Preference, m.Host), "%s", match)
			if pr := m.Probe; pr != nil {
				t.probe(pr)
			}
		}
	}
	if r := d.TLSRPT; r != nil {
		t.head("TLSRPT record")
		t.kv("name", "%s", r.Name)
		if r.Record != "" {
			t.kv("record", "%s", r.Record)
		} else {
			t.kv("record", "none (%s)", r.Error)
		}
	}
	if c := d.Cache; c != nil {
		t.head("Cache")
		t.kv("dir", "%s", c.Dir)
		if c.ID != "" {
			t.kv("held", "id %s, mode %s, fetched %s, expires %s", c.ID, c.Mode, stamp(*c.Fetched), stamp(*c.Expires))
		} else {
			t.kv("held", "nothing")
		}
		if c.Purged {
			t.kv("purged", "yes: the next lookup fetches afresh")
		}
		if c.Error != "" {
			t.kv("error", "%s", t.paint(red, c.Error))
		}
	}
	t.head("Findings")
	if len(d.Findings) == 0 {
		t.kv("", "%s", t.paint(green, "none"))
	}
	for _, f := range d.Findings {
		sev := f.Severity
		switch sev {
		case "error":
			sev = t.paint(red, sev)
		case "warning":
			sev = t.paint(yellow, sev)
		}
		msg := f.Message
		if f.ResultType != "" {
			msg += " [reported as " + f.ResultType
			if f.Reason != "" && f.Reason != f.ResultType {
				msg += ", " + f.Reason
			}
			msg += "]"
		}
		t.kv(sev+" "+f.Code, "%s", msg)
	}
	verdictColor := green
	switch d.Verdict.Action {
	case "defer", "unknown", "no-mail":
		verdictColor = red
	case "deliver-opportunistic", "deliver-testing":
		verdictColor = yellow
	}
	fmt.Fprintf(t.tw, "%s\t%s\n", t.paint(bold, "Verdict"), t.paint(verdictColor, d.Verdict.Action+": "+d.Verdict.Text))
	if len(d.Verdict.Reports) > 0 {
		var rs []string
		for _, r := range d.Verdict.Reports {
			rs = append(rs, r.ResultType+" ("+r.Reason+")")
		}
		t.kv("TLSRPT reports show", "%s", strings.Join(rs, ", "))
	}
}

func (t *textWriter) cert(label string, c certInfo) {
	t.kv(label, "%s, issued by %s", strings.Join(c.Names, " "), c.Issuer)
	left := plural(c.DaysLeft, "day") + " left"
	if c.DaysLeft < 0 {
		left = t.paint(red, "expired "+plural(-c.DaysLeft, "day")+" ago")
	}
	t.kv("", "expires %s (%s)", stamp(c.NotAfter), left)
}

func (t *textWriter) probe(pr *probeReport) {
	if !pr.Connected {
		t.kv("  probe", "%s", t.paint(red, "no session: "+pr.Error))
		return
	}
	t.kv("  banner", "%s", pr.Banner)
	if !pr.STARTTLS {
		t.kv("  STARTTLS", "%s", t.paint(red, "not offered"))
	} else {
		t.kv("  STARTTLS", "offered%s", map[bool]string{true: ", " + pr.TLSVersion, false: ""}[pr.TLSVersion != ""])
	}
	if c := pr.Certificate; c != nil {
		t.cert("  certificate", *c)
		if pr.Verified {
			t.kv("  verified", "%s", t.paint(green, "yes, for the MX name"))
		}
	}
	if pr.Error != "" {
		t.kv("  error", "%s", t.paint(red, pr.Error))
	}
}

func stamp(ts time.Time) string { return ts.UTC().Format("2006-01-02 15:04 UTC") }

// age writes seconds in days, or hours under a day.
func age(s int64) string {
	d := time.Duration(s) * time.Second
	if d >= 24*time.Hour {
		return fmt.Sprintf("%.4g days", d.Hours()/24)
	}
	return d.String()
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return strconv.Itoa(n) + " " + unit + "s"
}
