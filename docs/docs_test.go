package docs

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// root is the repository's top directory, from this package's.
const root = ".."

// files are the repository's files whose names end in one of exts, outside
// .git and testdata.
func files(t *testing.T, exts ...string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		for _, ext := range exts {
			if !d.IsDir() && strings.HasSuffix(p, ext) {
				out = append(out, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var (
	inlineLink = regexp.MustCompile(`!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	refLink    = regexp.MustCompile(`^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)`)
	codeSpan   = regexp.MustCompile("`+[^`]*`+")
	scheme     = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
)

// links are the link targets of a Markdown text with their line numbers,
// leaving out code blocks and code spans, where nothing is a link.
func links(text string) (targets []string, lines []int) {
	fence := ""
	for i, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if fence == "" && (strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~")) {
			fence = trimmed[:3]
			continue
		}
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			}
			continue
		}
		line = codeSpan.ReplaceAllString(line, "")
		for _, m := range inlineLink.FindAllStringSubmatch(line, -1) {
			targets, lines = append(targets, m[1]), append(lines, i+1)
		}
		if m := refLink.FindStringSubmatch(line); m != nil {
			targets, lines = append(targets, m[1]), append(lines, i+1)
		}
	}
	return targets, lines
}

// Every relative link in the repository's Markdown names a file or
// directory inside the repository: a link outside it (the contract beside
// the checkout, ../shared/CONTRACT.md) is broken in a clone, even where the
// file happens to exist on this machine.
func TestRelativeLinksStayInTheRepository(t *testing.T) {
	top, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	mds := files(t, ".md")
	if len(mds) < 3 {
		t.Fatalf("found %d Markdown files: %v", len(mds), mds)
	}
	checked := 0
	for _, md := range mds {
		b, err := os.ReadFile(md)
		if err != nil {
			t.Fatal(err)
		}
		targets, lines := links(string(b))
		for i, target := range targets {
			if scheme.MatchString(target) || strings.HasPrefix(target, "#") {
				continue
			}
			checked++
			path, _, _ := strings.Cut(target, "#")
			abs, err := filepath.Abs(filepath.Join(filepath.Dir(md), path))
			if err != nil {
				t.Fatal(err)
			}
			rel, err := filepath.Rel(top, abs)
			name, _ := filepath.Rel(root, md)
			switch {
			case err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)):
				t.Errorf("%s:%d: the link %s leads outside the repository, so it is broken in a clone", name, lines[i], target)
			default:
				if _, err := os.Stat(abs); err != nil {
					t.Errorf("%s:%d: the link %s names no file in the repository", name, lines[i], target)
				}
			}
		}
	}
	if checked == 0 {
		t.Error("no relative link found: the link pattern is broken")
	}
}

// links finds what a reader would follow, and nothing in code.
func TestLinksFindsMarkdownLinks(t *testing.T) {
	text := "See [the contract](../shared/CONTRACT.md) and ![shot](docs/status-page.png \"title\").\n" +
		"[ref]: ../out.md\n" +
		"`[not](a-link.md)` and\n```\n[nor](this.md)\n```\n[web](https://example.com/x)\n"
	got, lines := links(text)
	want := []string{"../shared/CONTRACT.md", "docs/status-page.png", "../out.md", "https://example.com/x"}
	if strings.Join(got, " ") != strings.Join(want, " ") || lines[2] != 2 {
		t.Errorf("links = %q at %v, want %q", got, lines, want)
	}
}

// No command in the docs or scripts writes a credential to Vault from a
// file with key=@file: Vault keeps the file's trailing newline (echo and
// editors end a file with one), and tokenproxy refuses the value. The docs
// write a JSON object from a file (@file.json), or one key through
// `tr -d '\r\n'` on stdin (key=-); internal/secrets/vault_deploy_test.go
// runs the documented commands against a real Vault.
func TestNoVaultWriteKeepsAFilesNewline(t *testing.T) {
	bad := regexp.MustCompile(`vault kv (put|patch)\b[^\n` + "`" + `]*\s[A-Za-z0-9_.-]+=@`)
	if !bad.MatchString("vault kv patch secret/tokenproxy/hgem client_secret=@new.txt") || bad.MatchString("vault kv put secret/tokenproxy/hgem @hgem.json") {
		t.Fatal("the pattern does not tell key=@file from @file.json")
	}
	for _, f := range files(t, ".md", ".sh") {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			if bad.MatchString(line) {
				name, _ := filepath.Rel(root, f)
				t.Errorf("%s:%d: %s\n\tkey=@file stores the file's trailing newline, which tokenproxy refuses; write tr -d '\\r\\n' <file | vault kv patch PATH key=-", name, i+1, strings.TrimSpace(line))
			}
		}
	}
}
