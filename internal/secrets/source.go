package secrets

import (
	"context"
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/tokenproxy/tokenproxy/internal/config"
)

// Source reads one credentials reference. Read is safe for concurrent use.
// Its errors name the reference and key, never a value.
type Source interface {
	Read(ctx context.Context) (Credentials, error)
	// Kind is "vault", "file", "env" or "memory": the metrics source label.
	Kind() string
}

// Open returns the Source for a credentials reference. vault may be nil when
// no reference uses it.
func Open(ref string, vault *Vault) (Source, error) {
	kind, rest, err := config.ParseRef(ref)
	if err != nil {
		return nil, err
	}
	switch kind {
	case "file":
		return File(rest), nil
	case "env":
		return Env(rest), nil
	default: // vault
		if vault == nil {
			return nil, fmt.Errorf("%s: no vault is configured", ref)
		}
		return vault.Secret(rest), nil
	}
}

// Load reads src once and checks that the credentials hold every key of
// keys, the ones the upstream's vendor needs (Check). Errors name ref and
// the key, never a value.
func Load(ctx context.Context, src Source, keys []string, ref string) (Credentials, error) {
	c, err := src.Read(ctx)
	if err != nil {
		return Credentials{}, err
	}
	if err := Check(keys, c); err != nil {
		return Credentials{}, fmt.Errorf("%s: %w", ref, err)
	}
	return c, nil
}

// File is a JSON or YAML file holding an object of credential keys.
type File string

func (f File) Kind() string { return "file" }

func (f File) Read(context.Context) (Credentials, error) {
	b, err := os.ReadFile(string(f))
	if err != nil {
		return Credentials{}, fmt.Errorf("file:%s: %w", f, err)
	}
	var values map[string]string
	// The decoder's own message may quote the content: do not pass it on.
	if err := yaml.Unmarshal(b, &values); err != nil || values == nil {
		return Credentials{}, fmt.Errorf("file:%s: not a JSON or YAML object of string values", f)
	}
	return NewCredentials(values, ""), nil
}

// Env reads <PREFIX>_<KEY> variables; the key is the rest of the name, lower-cased.
type Env string

func (e Env) Kind() string { return "env" }

func (e Env) Read(context.Context) (Credentials, error) {
	values := map[string]string{}
	for _, kv := range os.Environ() {
		name, value, _ := strings.Cut(kv, "=")
		if key, ok := strings.CutPrefix(name, string(e)+"_"); ok && key != "" {
			values[strings.ToLower(key)] = value
		}
	}
	if len(values) == 0 {
		return Credentials{}, fmt.Errorf("env:%s: no variable %s_* is set", e, e)
	}
	return NewCredentials(values, ""), nil
}

// Memory holds fixed credentials, for tokenproxy dev.
type Memory map[string]string

func (m Memory) Kind() string { return "memory" }

func (m Memory) Read(context.Context) (Credentials, error) { return NewCredentials(m, ""), nil }
