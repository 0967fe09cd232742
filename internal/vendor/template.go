package vendor

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// Template is a value written with placeholders, parsed:
//
//	{credential KEY}   the credential KEY (every credential value is secret)
//	{basic ID SECRET}  base64(ID ":" SECRET), each form-encoded first: HTTP
//	                   Basic client authentication (RFC 6749 §2.3.1)
//	{token}            the access token (API headers only)
//	{refresh_token}    the refresh token being presented (refresh grant only)
//	{scope}            the upstream's scope setting (or the vendor's default)
//	{audience}         the upstream's audience setting
//
// Any other text is sent as written; a brace outside a placeholder is an error.
type Template []segment

type segment struct {
	text string   // literal text, when name is ""
	name string   // placeholder
	args []string // its credential keys
}

// Placeholders are the placeholder names a template may use, and how many
// credential keys each takes.
var Placeholders = map[string]int{
	"credential": 1, "basic": 2, "token": 0, "refresh_token": 0, "scope": 0, "audience": 0,
}

// ParseTemplate parses s. Its errors say what is wrong and never quote a
// credential (templates hold none).
func ParseTemplate(s string) (Template, error) {
	var t Template
	rest := s
	for rest != "" {
		open := strings.IndexAny(rest, "{}")
		if open < 0 {
			t = append(t, segment{text: rest})
			break
		}
		if rest[open] == '}' {
			return nil, fmt.Errorf("%q has a } without a {", s)
		}
		if open > 0 {
			t = append(t, segment{text: rest[:open]})
		}
		end := strings.IndexAny(rest[open+1:], "{}")
		if end < 0 || rest[open+1+end] == '{' {
			return nil, fmt.Errorf("%q has a { that is not closed", s)
		}
		words := strings.Fields(rest[open+1 : open+1+end])
		if len(words) == 0 {
			return nil, fmt.Errorf("%q has an empty {}", s)
		}
		n, ok := Placeholders[words[0]]
		if !ok {
			return nil, fmt.Errorf("{%s} is not a placeholder; known: %s", words[0], strings.Join(placeholderNames(), ", "))
		}
		if len(words)-1 != n {
			return nil, fmt.Errorf("{%s} takes %s", words[0], argsWord(words[0], n))
		}
		t = append(t, segment{name: words[0], args: words[1:]})
		rest = rest[open+1+end+1:]
	}
	return t, nil
}

func argsWord(name string, n int) string {
	switch name {
	case "credential":
		return "one credential key: {credential api_key}"
	case "basic":
		return "two credential keys: {basic client_id client_secret}"
	}
	return fmt.Sprintf("%d words", n)
}

func placeholderNames() []string {
	names := make([]string, 0, len(Placeholders))
	for k := range Placeholders {
		names = append(names, "{"+k+"}")
	}
	slices.Sort(names)
	return names
}

// Has reports whether t uses the placeholder name.
func (t Template) Has(name string) bool {
	return slices.ContainsFunc(t, func(s segment) bool { return s.name == name })
}

// Keys are the credential keys t reads, in order.
func (t Template) Keys() []string {
	var keys []string
	for _, s := range t {
		keys = append(keys, s.args...)
	}
	return keys
}

// Values are what placeholders stand for when a template is expanded.
type Values struct {
	Credential          func(key string) string
	Token, RefreshToken string
	Scope, Audience     string
}

// Expand fills t's placeholders from v.
func (t Template) Expand(v Values) string {
	var b strings.Builder
	cred := func(k string) string {
		if v.Credential == nil {
			return ""
		}
		return v.Credential(k)
	}
	for _, s := range t {
		switch s.name {
		case "":
			b.WriteString(s.text)
		case "credential":
			b.WriteString(cred(s.args[0]))
		case "basic":
			b.WriteString(basic(cred(s.args[0]), cred(s.args[1])))
		case "token":
			b.WriteString(v.Token)
		case "refresh_token":
			b.WriteString(v.RefreshToken)
		case "scope":
			b.WriteString(v.Scope)
		case "audience":
			b.WriteString(v.Audience)
		}
	}
	return b.String()
}

// basic is HTTP Basic client authentication's credentials (RFC 6749
// §2.3.1): id and secret, each form-encoded, joined by a colon, in base64.
func basic(id, secret string) string {
	return base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id) + ":" + url.QueryEscape(secret)))
}

// Secrets are the secret values t sends when expanded from v, so that a
// vendor's answer repeating them can be scrubbed (internal/redact adds the
// encodings): each credential, {basic} as sent and the two credentials in
// it, the token and the refresh token, and the whole expansion when it
// holds any of them. Nil for a template without secrets.
func (t Template) Secrets(v Values) []string {
	cred := func(k string) string {
		if v.Credential == nil {
			return ""
		}
		return v.Credential(k)
	}
	var out []string
	for _, s := range t {
		switch s.name {
		case "credential":
			out = append(out, cred(s.args[0]))
		case "basic":
			id, secret := cred(s.args[0]), cred(s.args[1])
			out = append(out, id, secret, basic(id, secret))
		case "token":
			out = append(out, v.Token)
		case "refresh_token":
			out = append(out, v.RefreshToken)
		}
	}
	if len(out) > 0 {
		out = append(out, t.Expand(v))
	}
	return out
}

// IsConstant reports whether t has no placeholder at all.
func (t Template) IsConstant() bool {
	return !slices.ContainsFunc(t, func(s segment) bool { return s.name != "" })
}

// literal is t's text outside placeholders.
func (t Template) literal() string {
	var b strings.Builder
	for _, s := range t {
		b.WriteString(s.text)
	}
	return b.String()
}
