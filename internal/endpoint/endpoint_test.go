package endpoint

import (
	"errors"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	port := func(p string) error { return &PortError{Port: p} }
	cases := []struct {
		raw   string
		plain Plain
		want  error // nil: accepted
	}{
		{"https://results-api.hgem.com", LoopbackOnly, nil},
		{"https://results-api.hgem.com:8443/v1/", LoopbackOnly, nil},
		{"https://h:1", LoopbackOnly, nil},
		{"https://h:65535", LoopbackOnly, nil},
		{"https://h:/", LoopbackOnly, nil}, // an empty port is the scheme's default
		{"https://[::1]:443", LoopbackOnly, nil},
		{"http://127.0.0.1:9000", LoopbackOnly, nil},
		{"http://localhost:9000", LoopbackOnly, nil},
		{"http://collector:4318", AnyHost, nil},
		// The ports a new user wrote, and their kin.
		{"https://results-api.hgem.com:99999", LoopbackOnly, port("99999")},
		{"https://results-api.hgem.com:0", LoopbackOnly, port("0")},
		{"https://auth.example:70000/token", LoopbackOnly, port("70000")},
		{"https://h:65536", AnyHost, port("65536")},
		{"https://h:99999999999999999999999", AnyHost, port("99999999999999999999999")},
		{"http://[::1]:0", LoopbackOnly, port("0")},
		{"https://h:https", LoopbackOnly, port("")},
		{"https://h:8o8o/x", AnyHost, port("")},
		{"https://h:-1", AnyHost, port("")},
		{"https://user:p4ss@h:x1", LoopbackOnly, port("")},
		// Not a place a connection can go.
		{"/relative", LoopbackOnly, ErrNotAbsolute},
		{"results-api.hgem.com", LoopbackOnly, ErrNotAbsolute},
		{"https://:443", LoopbackOnly, ErrNotAbsolute},
		{"https:opaque", LoopbackOnly, ErrNotAbsolute},
		{"https://h%zz", LoopbackOnly, ErrNotAbsolute},
		{"ftp://h", AnyHost, ErrScheme},
		{"ftp://h", LoopbackOnly, ErrPlainHTTP},
		{"http://results-api.hgem.com", LoopbackOnly, ErrPlainHTTP},
		{"https://u:p@h", LoopbackOnly, ErrUserInfo},
		{"http://u@collector", AnyHost, ErrUserInfo},
		{"https://h/?q=1", LoopbackOnly, ErrQuery},
		{"https://h/?", AnyHost, ErrQuery},
		{"https://h/#f", AnyHost, ErrQuery},
	}
	for _, c := range cases {
		err := Check(c.raw, c.plain)
		var pe *PortError
		switch {
		case c.want == nil && err != nil:
			t.Errorf("Check(%q) = %v, want nil", c.raw, err)
		case c.want == nil:
		case errors.As(c.want, &pe):
			var got *PortError
			if !errors.As(err, &got) || got.Port != pe.Port {
				t.Errorf("Check(%q) = %v, want %v", c.raw, err, c.want)
			}
		case !errors.Is(err, c.want):
			t.Errorf("Check(%q) = %v, want %v", c.raw, err, c.want)
		}
	}
}

// A URL that does not parse may hold a password where its port would be:
// the port is named only when it is a number.
func TestPortErrorNeverQuotesWhatIsNotANumber(t *testing.T) {
	for _, raw := range []string{"https://admin:s3cr3t/path", "https://u:s3cr3t@h:s3cr3t"} {
		err := Check(raw, LoopbackOnly)
		var pe *PortError
		if !errors.As(err, &pe) || strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("Check(%q) = %v, want a PortError without the text", raw, err)
		}
	}
	if got := (&PortError{Port: "99999"}).Error(); got != "port 99999 is out of range; a port is 1 to 65535 (or none, for the scheme's default)" {
		t.Errorf("message %q", got)
	}
}
