package secrets

import (
	"context"
	"testing"

	"github.com/hashicorp/vault/api"
)

// Reads go through the client's KVv1 and KVv2 helpers; every way a read
// fails keeps its message, naming the reference and the address, and a
// read the policy refuses leaves a good token logged in.
func TestVaultReadErrors(t *testing.T) {
	srv, root := startVault(t)
	ctx := context.Background()
	vaultPutKV2(t, root, "tokenproxy/allowed", vaultHGEMValues)
	vaultPutKV2(t, root, "tokenproxy/gone", vaultHGEMValues)
	if err := root.KVv2("secret").Delete(ctx, "tokenproxy/gone"); err != nil {
		t.Fatal(err)
	}
	if err := root.Sys().Mount("kv1", &api.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}); err != nil {
		t.Fatal(err)
	}
	if err := root.Sys().PutPolicy("allowed-only", `
path "secret/data/tokenproxy/allowed" { capabilities = ["read"] }
path "kv1/tokenproxy/allowed" { capabilities = ["read"] }
`); err != nil {
		t.Fatal(err)
	}
	tok, err := root.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"allowed-only"}})
	if err != nil {
		t.Fatal(err)
	}
	limited := runVault(t, srv, vaultTokenAuth(t, tok.Auth.ClientToken))
	h := runVault(t, srv, vaultTokenAuth(t, srv.RootToken()))
	h.readOK(t, "secret/tokenproxy/allowed")
	limited.readOK(t, "secret/tokenproxy/allowed")

	at := " at " + srv.Addr() + ": "
	for _, tc := range []struct {
		h          *vaultHarness
		path, want string
	}{
		{h, "secret/tokenproxy/nothing-here", "vault:secret/tokenproxy/nothing-here" + at + "no secret there (or its latest version is deleted)"},
		{h, "secret/tokenproxy/gone", "vault:secret/tokenproxy/gone" + at + "no secret there (or its latest version is deleted)"},
		{h, "kv1/tokenproxy/nothing-here", "vault:kv1/tokenproxy/nothing-here" + at + "no secret there (or its latest version is deleted)"},
		{h, "nomount/tokenproxy/x", "vault:nomount/tokenproxy/x" + at + "finding its KV mount: HTTP 403: preflight capability check returned 403, please ensure client's policies grant access to path \"nomount/tokenproxy/x/\""},
		{limited, "secret/tokenproxy/other", "vault:secret/tokenproxy/other" + at + "HTTP 403: 1 error occurred: * permission denied"},
		{limited, "kv1/tokenproxy/other", "vault:kv1/tokenproxy/other" + at + "HTTP 403: 1 error occurred: * permission denied"},
	} {
		_, err := tc.h.read(ctx, tc.path)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s:\n got %v\nwant %s", tc.path, err, tc.want)
		}
	}
	// The 403s made Run ask whether the token itself is refused: it is
	// not, so the limited login stays, and its reads go on.
	if c := limited.readOK(t, "secret/tokenproxy/allowed"); c.Version() != "1" || !limited.v.State().LoggedIn || limited.logins.Load() != 1 {
		t.Errorf("after refused reads: version %q, state %+v, %d logins", c.Version(), limited.v.State(), limited.logins.Load())
	}
}
