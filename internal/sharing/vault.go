package sharing

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/hashicorp/vault/api"

	"github.com/tokenproxy/tokenproxy/internal/secrets"
)

// casMismatch is how KV v2 refuses a write whose cas is not the current
// version: HTTP 400 with this message (vault-plugin-secrets-kv,
// path_data.go, validateCheckAndSetOption). Other 400s are not conflicts.
const casMismatch = "check-and-set parameter did not match the current version"

// Vault is a Store on a Vault KV v2 mount (CONTRACT.md §7): the record of
// upstream <name> is the secret <path>/<name>, in the format described at
// recordField, and the Store's version is the secret's KV version. It logs
// in, renews and re-logs in through the secrets.Vault it is given, the one
// that reads credentials; the mount and its KV version are looked up once
// and remembered.
//
// Load of a secret that does not exist is the zero Record with version 0.
// A latest version that was deleted or destroyed (`vault kv delete`,
// `vault kv destroy`) also reads as the zero Record, with that version, so
// a Save with it as cas writes over it. Save's cas is KV v2's cas option;
// the mismatch answer is ErrConflict. Every other failure is an error naming
// the address, the secret's path and what failed (an HTTP status and
// Vault's short message, or the transport's error), never a Record value.
// A call is one HTTP request once the mount is known; the first, and the
// first after a failure, also look the mount up. Vault is safe for
// concurrent use.
type Vault struct {
	v      *secrets.Vault
	prefix string // sharing.vault.path without surrounding slashes
}

// NewVault is the Store at path, sharing.vault.path ("<kv-v2-mount>/<prefix>";
// the mount may hold slashes). It does not contact Vault; Check does.
func NewVault(v *secrets.Vault, path string) *Vault {
	return &Vault{v: v, prefix: strings.Trim(path, "/")}
}

// Check finds sharing.vault.path's mount and reports, in one line the
// daemon logs at start, why it cannot hold the records: not logged in, the
// lookup refused (a path under no mount answers HTTP 403 too), a mount that
// is KV version 1 or not KV, or a path that names the mount alone.
//
// It also reads a record that no upstream can have (route names are
// [a-z0-9-]+), so that a policy without read on <path>/* is caught here:
// finding the mount takes no more than some access somewhere under it.
func (s *Vault) Check(ctx context.Context) error {
	kv, sub, err := s.v.KVv2(ctx, s.prefix+"/")
	if err == nil && sub == "" {
		err = errors.New("it names the mount alone, with no prefix for the records under it")
	}
	if err == nil {
		probe := strings.TrimSuffix(sub, "/") + "/" + checkProbe
		if _, gerr := kv.Get(ctx, probe); gerr != nil && !errors.Is(gerr, api.ErrSecretNotFound) {
			err = fmt.Errorf("reading %s/*: %w", s.prefix, s.v.Failed(s.prefix+"/"+checkProbe, gerr))
		}
	}
	if err != nil {
		return fmt.Errorf("sharing.vault.path %s at %s: %w", s.prefix, s.v.Addr(), err)
	}
	return nil
}

// checkProbe is the record Check reads: no upstream is named so.
const checkProbe = "_check"

// Load returns the record of upstream name and its KV version.
func (s *Vault) Load(ctx context.Context, name string) (Record, int, error) {
	path, kv, sub, err := s.open(ctx, name)
	if err != nil {
		return Record{}, 0, err
	}
	sec, err := kv.Get(ctx, sub)
	if errors.Is(err, api.ErrSecretNotFound) {
		return Record{}, 0, nil
	}
	if err != nil {
		return Record{}, 0, s.fail(path, "reading", s.denied(s.v.Failed(path, err), "the policy needs read on "+dataPath(path, sub)))
	}
	if sec.VersionMetadata == nil {
		return Record{}, 0, s.fail(path, "reading", errors.New("the answer has no version"))
	}
	if sec.Data == nil { // deleted or destroyed: its metadata came with a 404
		return Record{}, sec.VersionMetadata.Version, nil
	}
	rec, err := decodeRecord(sec.Data)
	if err != nil {
		err = fmt.Errorf("%w: %w", ErrMalformed, err)
		return Record{}, sec.VersionMetadata.Version, s.fail(path, fmt.Sprintf("version %d is not a record", sec.VersionMetadata.Version), err)
	}
	return rec, sec.VersionMetadata.Version, nil
}

// Save writes rec as the record of upstream name if its KV version is still
// cas, and returns the new version.
func (s *Vault) Save(ctx context.Context, name string, rec Record, cas int) (int, error) {
	path, kv, sub, err := s.open(ctx, name)
	if err != nil {
		return 0, err
	}
	data, err := encodeRecord(rec)
	if err != nil {
		return 0, s.fail(path, "writing", err)
	}
	sec, err := kv.Put(ctx, sub, data, api.WithCheckAndSet(cas))
	if isCASMismatch(err) {
		return 0, ErrConflict
	}
	if err != nil {
		capability := "update"
		if cas == 0 {
			capability = "create"
		}
		return 0, s.fail(path, "writing", s.denied(s.v.Failed(path, err), "the policy needs "+capability+" on "+dataPath(path, sub)))
	}
	if sec.VersionMetadata == nil {
		return 0, s.fail(path, "writing", errors.New("the answer has no version"))
	}
	return sec.VersionMetadata.Version, nil
}

// open is the secret's path and the KV v2 client for its mount.
func (s *Vault) open(ctx context.Context, name string) (string, *api.KVv2, string, error) {
	path := s.prefix + "/" + name
	if name == "" || strings.Contains(name, "/") {
		return path, nil, "", s.fail(path, "naming it", errors.New("an upstream name must be one path segment"))
	}
	kv, sub, err := s.v.KVv2(ctx, path)
	if err != nil {
		// Finding the mount takes some access under it: a path outside
		// the policy is refused here.
		return path, nil, "", fmt.Errorf("sharing: vault:%s at %s: %w", path, s.v.Addr(), s.denied(err, "no KV mount holds it, or the policy grants nothing under its mount: it needs read, create and update on the records"))
	}
	return path, kv, sub, nil
}

func (s *Vault) fail(path, doing string, err error) error {
	return fmt.Errorf("sharing: vault:%s at %s: %s: %w", path, s.v.Addr(), doing, err)
}

// denied marks err as ErrDenied when Vault answered 403, with hint: what
// the call needed.
func (s *Vault) denied(err error, hint string) error {
	var re *api.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusForbidden {
		return err
	}
	return deniedError{err: err, hint: hint + ", or Vault's token is no longer valid"}
}

// deniedError is a 403 with what the call needed; it is ErrDenied.
type deniedError struct {
	err  error
	hint string
}

func (e deniedError) Error() string   { return e.err.Error() + " (" + e.hint + ")" }
func (e deniedError) Unwrap() []error { return []error{ErrDenied, e.err} }

// dataPath is the API path of the secret at path (<mount>/<sub>) on a KV v2
// mount, the one a policy names: <mount>/data/<sub>.
func dataPath(path, sub string) string {
	mount := strings.TrimSuffix(strings.TrimSuffix(path, sub), "/")
	return mount + "/data/" + strings.TrimPrefix(sub, "/")
}

var _ Store = (*Vault)(nil)

func isCASMismatch(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusBadRequest &&
		slices.ContainsFunc(re.Errors, func(e string) bool { return strings.Contains(e, casMismatch) })
}
