// Command report turns what bench/run.sh left in its output directory (wrk
// and vegeta outputs, samples.tsv, machine.env) into a markdown section and a
// latency-percentile plot, and exits 1 when the run is invalid: a request
// reached the upstream without the injected headers, an answer was not 2xx,
// or a transfer failed.
//
//	report -in DIR -md FILE [-png FILE] [-png-link PATH] [-publish BENCHMARKS.md]
//
// -publish replaces the part of the file between the markers
// "<!-- bench:begin -->" and "<!-- bench:end -->" with the section.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
)

func main() {
	in := flag.String("in", "", "bench/run.sh's output directory (required)")
	md := flag.String("md", "", "where to write the markdown section (required)")
	png := flag.String("png", "", "where to write the latency plot, PNG")
	link := flag.String("png-link", "latency.png", "the plot's path as the markdown links it; empty for no link")
	publish := flag.String("publish", "", "a markdown file whose marked part is replaced by the section")
	flag.Parse()
	if *in == "" || *md == "" {
		fmt.Fprintln(os.Stderr, "report: -in and -md are required")
		os.Exit(2)
	}
	if err := run(*in, *md, *png, *link, *publish); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func run(in, md, png, link, publish string) error {
	res, err := load(in)
	if err != nil {
		return err
	}
	section := res.markdown(link)
	problems, notes := res.problems(), res.notes()
	if len(problems) > 0 || len(notes) > 0 {
		section += "\n### Problems in this run\n\n"
		for _, p := range problems {
			section += "- " + p + "\n"
		}
		for _, n := range notes {
			section += "- " + n + " (not an error: wrk's 2 s timeout under saturation)\n"
		}
	}
	if err := os.WriteFile(md, []byte(section), 0o644); err != nil {
		return err
	}
	if png != "" {
		if err := res.plotLatency(png); err != nil {
			return fmt.Errorf("plot: %w", err)
		}
	}
	if publish != "" {
		if err := replaceMarked(publish, section); err != nil {
			return err
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("the run is invalid:\n  %s", strings.Join(problems, "\n  "))
	}
	return nil
}

const beginMark, endMark = "<!-- bench:begin -->", "<!-- bench:end -->"

// replaceMarked rewrites path with section between its two markers, which
// stay.
func replaceMarked(path, section string) error {
	text, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	i, j := bytes.Index(text, []byte(beginMark)), bytes.Index(text, []byte(endMark))
	if i < 0 || j < i {
		return errors.New(path + ": want the markers " + beginMark + " and, after it, " + endMark)
	}
	var b bytes.Buffer
	b.Write(text[:i+len(beginMark)])
	b.WriteString("\n" + section)
	b.Write(text[j:])
	return os.WriteFile(path, b.Bytes(), 0o644)
}
