package sharing

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
)

// A Record is stored as the data of one KV v2 secret: a flat object of
// strings, one key per field, so that `vault kv get` shows it plainly and no
// JSON reader (the Vault UI's JavaScript among them) rounds a number.
//
//	key                 Record field       value
//	access_token        AccessToken        text
//	expiry              Expiry             time
//	obtained            Obtained           time
//	refresh_at          RefreshAt          time
//	refresh_token       RefreshToken       text
//	refresh_expiry      RefreshExpiry      time
//	credential_version  CredentialVersion  text
//	generation          Generation         number
//	minted_by           MintedBy           text
//	audience_type       AudienceType       text
//	audience_token_url  AudienceTokenURL   text
//	audience_base_url   AudienceBaseURL    text
//	lease_holder        LeaseHolder        text
//	lease_until         LeaseUntil         time
//	last_reauth         LastReauth         time
//	reauth_generation   ReauthGeneration   number
//	retry_at            RetryAt            time
//	failure_code        FailureCode        text
//	failure_message     FailureMsg         text
//	failure_version     FailureVersion     text
//
// Every key is written. A time is RFC 3339 with nanoseconds in UTC
// ("2025-01-02T03:04:05.123456789Z", trailing zeros of the fraction dropped),
// or "" for the zero time. A number is an unsigned decimal integer in a
// string ("42"). Reading is tolerant: a missing key or null is the zero
// value, a number may also be a JSON number, a time may have any offset, and
// keys not listed are ignored (a newer tokenproxy may add some). Anything
// else (a time that does not parse, a number that is negative, fractional or
// beyond 64 bits, a text that is an object) makes the record malformed: an
// error naming the key, never its value.
type recordField struct {
	key  string
	text *string
	time *time.Time
	num  *uint64
}

// fields is the table above, for encoding and decoding alike.
func fields(r *Record) []recordField {
	return []recordField{
		{key: "access_token", text: &r.AccessToken},
		{key: "expiry", time: &r.Expiry},
		{key: "obtained", time: &r.Obtained},
		{key: "refresh_at", time: &r.RefreshAt},
		{key: "refresh_token", text: &r.RefreshToken},
		{key: "refresh_expiry", time: &r.RefreshExpiry},
		{key: "credential_version", text: &r.CredentialVersion},
		{key: "generation", num: &r.Generation},
		{key: "minted_by", text: &r.MintedBy},
		{key: "audience_type", text: &r.AudienceType},
		{key: "audience_token_url", text: &r.AudienceTokenURL},
		{key: "audience_base_url", text: &r.AudienceBaseURL},
		{key: "lease_holder", text: &r.LeaseHolder},
		{key: "lease_until", time: &r.LeaseUntil},
		{key: "last_reauth", time: &r.LastReauth},
		{key: "reauth_generation", num: &r.ReauthGeneration},
		{key: "retry_at", time: &r.RetryAt},
		{key: "failure_code", text: &r.FailureCode},
		{key: "failure_message", text: &r.FailureMsg},
		{key: "failure_version", text: &r.FailureVersion},
	}
}

// encodeRecord is rec as KV v2 data. It fails only on a time outside the
// years 0 to 9999, which RFC 3339 cannot write.
func encodeRecord(rec Record) (map[string]any, error) {
	fs := fields(&rec)
	data := make(map[string]any, len(fs))
	for _, f := range fs {
		switch {
		case f.text != nil:
			data[f.key] = *f.text
		case f.num != nil:
			data[f.key] = strconv.FormatUint(*f.num, 10)
		case f.time.IsZero():
			data[f.key] = ""
		default:
			b, err := f.time.UTC().MarshalText()
			if err != nil {
				return nil, fmt.Errorf("record key %s: a time RFC 3339 cannot write (year outside 0 to 9999)", f.key)
			}
			data[f.key] = string(b)
		}
	}
	return data, nil
}

// decodeRecord reads KV v2 data written by encodeRecord, tolerantly (see
// the table above). Errors name the key and what is wrong, never the value.
func decodeRecord(data map[string]any) (Record, error) {
	var rec Record
	var errs []error
	for _, f := range fields(&rec) {
		v, ok := data[f.key]
		if !ok || v == nil {
			continue
		}
		if err := decodeField(f, v); err != nil {
			errs = append(errs, fmt.Errorf("key %s: %w", f.key, err))
		}
	}
	if len(errs) > 0 {
		return Record{}, errors.Join(errs...)
	}
	return rec, nil
}

func decodeField(f recordField, v any) error {
	switch {
	case f.text != nil:
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("%s, not a string", jsonKind(v))
		}
		*f.text = s
	case f.num != nil:
		n, err := decodeNumber(v)
		if err != nil {
			return err
		}
		*f.num = n
	default:
		s, ok := v.(string)
		if !ok {
			return fmt.Errorf("%s, not an RFC 3339 time in a string", jsonKind(v))
		}
		if s == "" {
			return nil
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return errors.New("not an RFC 3339 time")
		}
		*f.time = t.UTC()
	}
	return nil
}

const errNumber = "not a whole number from 0 to 18446744073709551615"

// decodeNumber takes a decimal string, a json.Number (the Vault API client
// decodes with UseNumber) or a float64 holding a whole number.
func decodeNumber(v any) (uint64, error) {
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case json.Number:
		s = x.String()
	case float64:
		if x < 0 || x != math.Trunc(x) || x >= 1<<64 {
			return 0, errors.New(errNumber)
		}
		return uint64(x), nil
	default:
		return 0, fmt.Errorf("%s, %s", jsonKind(v), errNumber)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, errors.New(errNumber)
	}
	return n, nil
}

// jsonKind names a decoded JSON value's type without showing it.
func jsonKind(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case json.Number, float64:
		return "a number"
	case bool:
		return "a boolean"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	default:
		return fmt.Sprintf("a %T", v)
	}
}
