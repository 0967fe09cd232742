package sharing

import (
	"encoding/json"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fullRecord sets every field of Record, by reflection, to a distinct
// non-zero value: a field added to Record and forgotten in the format's
// table fails the round trips that use it.
func fullRecord(t testing.TB, seed string) Record {
	t.Helper()
	var rec Record
	v := reflect.ValueOf(&rec).Elem()
	zone := time.FixedZone("UTC+5:30", 5*3600+1800)
	for i := range v.NumField() {
		f, name := v.Field(i), v.Type().Field(i).Name
		switch f.Interface().(type) {
		case string:
			f.SetString("CANARY-" + seed + "-" + name)
		case uint64:
			f.SetUint(math.MaxUint64 - uint64(i))
		case time.Time:
			// Nanoseconds, a zone other than UTC, and a monotonic reading.
			tm := time.Date(2025, 1, 2, 3, 4, 5, 123456789+i, zone)
			f.Set(reflect.ValueOf(tm))
		default:
			t.Fatalf("Record.%s has a type the format does not know: %s", name, f.Type())
		}
	}
	rec.Obtained = time.Now() // carries a monotonic clock reading
	return rec
}

func TestFormatRoundTrip(t *testing.T) {
	full := fullRecord(t, "a")
	partial := Record{AccessToken: "CANARY-tok", Expiry: time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC), Generation: 1}
	for name, rec := range map[string]Record{"full": full, "zero": {}, "partial": partial} {
		data, err := encodeRecord(rec)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(data) != reflect.TypeFor[Record]().NumField() {
			t.Errorf("%s: %d keys written for %d Record fields", name, len(data), reflect.TypeFor[Record]().NumField())
		}
		// Through JSON as Vault stores it, and back as the API client reads it.
		b, _ := json.Marshal(data)
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.UseNumber()
		var back map[string]any
		if err := dec.Decode(&back); err != nil {
			t.Fatal(err)
		}
		got, err := decodeRecord(back)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if d := cmp.Diff(rec, got); d != "" {
			t.Errorf("%s: round trip (-want +got):\n%s", name, d)
		}
		for _, tm := range []time.Time{got.Expiry, got.LeaseUntil} {
			if !tm.IsZero() && tm.Location() != time.UTC {
				t.Errorf("%s: decoded time in %s, want UTC", name, tm.Location())
			}
		}
	}
}

// The stored form is the documented one, key by key.
func TestFormatWritesTheDocumentedForm(t *testing.T) {
	rec := Record{
		AccessToken: "tok", Expiry: time.Date(2025, 1, 2, 8, 34, 5, 120000000, time.FixedZone("", 5*3600+1800)),
		Generation: math.MaxUint64, LeaseHolder: "host-1",
	}
	data, err := encodeRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"access_token": "tok", "expiry": "2025-01-02T03:04:05.12Z", "obtained": "", "refresh_at": "",
		"refresh_token": "", "refresh_expiry": "", "credential_version": "", "generation": "18446744073709551615",
		"minted_by": "", "audience_type": "", "audience_token_url": "", "audience_base_url": "", "lease_holder": "host-1", "lease_until": "", "last_reauth": "", "reauth_generation": "0",
		"retry_at": "", "failure_code": "", "failure_message": "", "failure_version": "",
	}
	if d := cmp.Diff(want, data); d != "" {
		t.Errorf("stored form (-want +got):\n%s", d)
	}
}

func TestFormatReadsTolerantly(t *testing.T) {
	got, err := decodeRecord(map[string]any{
		"access_token":      "tok",
		"expiry":            "2025-01-02T08:34:05+05:30", // any offset, no fraction
		"refresh_at":        "",
		"obtained":          nil,
		"generation":        json.Number("18446744073709551615"),
		"reauth_generation": float64(7),
		"newer_key":         map[string]any{"x": 1}, // from a newer tokenproxy
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Record{AccessToken: "tok", Expiry: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), Generation: math.MaxUint64, ReauthGeneration: 7}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if got.Expiry.Location() != time.UTC {
		t.Errorf("expiry in %s, want UTC", got.Expiry.Location())
	}
}

// A malformed record is an error naming every bad key and what is wrong,
// never a value.
func TestFormatRefusesMalformedRecords(t *testing.T) {
	cases := []struct {
		key  string
		val  any
		want string
	}{
		{"access_token", json.Number("12"), "key access_token: a number, not a string"},
		{"refresh_token", map[string]any{"CANARY": "CANARY"}, "key refresh_token: an object, not a string"},
		{"minted_by", true, "key minted_by: a boolean, not a string"},
		{"expiry", "CANARY-2025-13-01", "key expiry: not an RFC 3339 time"},
		{"expiry", "2025-01-02 03:04:05", "key expiry: not an RFC 3339 time"},
		{"lease_until", json.Number("1735787045"), "key lease_until: a number, not an RFC 3339 time in a string"},
		{"generation", "-1", "key generation: " + errNumber},
		{"generation", "CANARY1", "key generation: " + errNumber},
		{"generation", "18446744073709551616", "key generation: " + errNumber},
		{"generation", json.Number("1.5"), "key generation: " + errNumber},
		{"generation", json.Number("1e3"), "key generation: " + errNumber},
		{"generation", float64(-1), "key generation: " + errNumber},
		{"generation", 2.5, "key generation: " + errNumber},
		{"generation", math.Inf(1), "key generation: " + errNumber},
		{"reauth_generation", []any{"CANARY"}, "key reauth_generation: an array, " + errNumber},
	}
	for _, c := range cases {
		_, err := decodeRecord(map[string]any{"access_token": "CANARY-tok", c.key: c.val})
		if err == nil || err.Error() != c.want {
			t.Errorf("%s = %#v: got %v, want %q", c.key, c.val, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "CANARY") {
			t.Errorf("%s: the error shows a value: %v", c.key, err)
		}
	}
	// Every problem at once.
	_, err := decodeRecord(map[string]any{"expiry": "x", "generation": "y"})
	if err == nil || !strings.Contains(err.Error(), "key expiry") || !strings.Contains(err.Error(), "key generation") {
		t.Errorf("two bad keys: got %v", err)
	}
}

func TestFormatRefusesTimesRFC3339CannotWrite(t *testing.T) {
	for _, tm := range []time.Time{time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)} {
		_, err := encodeRecord(Record{AccessToken: "CANARY", RetryAt: tm})
		if err == nil || !strings.Contains(err.Error(), "record key retry_at") || strings.Contains(err.Error(), "CANARY") {
			t.Errorf("%v: got %v, want an error naming retry_at", tm, err)
		}
	}
}

// FuzzDecodeRecord: whatever is stored, decoding never panics, and what it
// accepts survives a round trip.
func FuzzDecodeRecord(f *testing.F) {
	full, _ := encodeRecord(fullRecord(f, "seed"))
	b, _ := json.Marshal(full)
	f.Add(string(b))
	f.Add(`{"generation": 3, "expiry": "2025-01-02T03:04:05Z", "x": null}`)
	f.Add(`{"generation": "99999999999999999999", "lease_until": "2025-01-02T03:04:05.999999999+14:00"}`)
	f.Fuzz(func(t *testing.T, in string) {
		dec := json.NewDecoder(strings.NewReader(in))
		dec.UseNumber()
		var data map[string]any
		if dec.Decode(&data) != nil {
			return
		}
		rec, err := decodeRecord(data)
		if err != nil {
			return
		}
		enc, err := encodeRecord(rec)
		if err != nil {
			return // a year RFC 3339 cannot write, parsed from an offset beyond it
		}
		again, err := decodeRecord(enc)
		if err != nil {
			t.Fatalf("re-reading what was written: %v", err)
		}
		if d := cmp.Diff(rec, again); d != "" {
			t.Fatalf("round trip (-first +second):\n%s", d)
		}
	})
}

// An audience keeps what names the vendor's hosts and nothing that could
// hold a secret (user info, a query), and says which parts differ without
// their values.
func TestAudience(t *testing.T) {
	a := NewAudience("prominsight", "https://user:CANARY-pw@Api.Prominsight.example/oauth/token?key=CANARY-q#f", "https://api.prominsight.example/v2")
	want := Audience{Type: "prominsight", TokenURL: "https://api.prominsight.example/oauth/token", BaseURL: "https://api.prominsight.example"}
	if a != want {
		t.Fatalf("got %+v, want %+v", a, want)
	}
	b := NewAudience("inspera", "https://tenant.inspera.example/auth/token", "https://tenant.inspera.example")
	if d := a.Differs(b); !slices.Equal(d, []string{"type", "token_url", "base_url"}) {
		t.Errorf("differs %v", d)
	}
	if d := a.Differs(NewAudience("prominsight", "https://api.prominsight.example/oauth/token", "https://api.prominsight.example/other")); d != nil {
		t.Errorf("another base path on the same host differs: %v", d)
	}
	var r Record
	r.SetAudience(a)
	if r.Audience() != a {
		t.Errorf("record audience %+v", r.Audience())
	}
}
