package secrets

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
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
	values, err := parseObject(b)
	if err != nil {
		return Credentials{}, fmt.Errorf("file:%s: %w", f, err)
	}
	return NewCredentials(values, ""), nil
}

// parseObject reads a JSON or YAML object of string values (a JSON file is
// YAML too) as yaml.v3 would decode it into a map[string]string: a number
// or boolean is its text, an empty value "". Its error says every thing
// wrong, each by a key name and a line of the file, and never quotes a
// value: it is built from positions and key names only, since the parser's
// own messages may quote the text.
func parseObject(b []byte) (map[string]string, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("is empty; want a JSON or YAML object of string values")
		}
		return nil, syntaxError(b, err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		return nil, fmt.Errorf("a second YAML document starts at line %d of the file (after ---); want one object of string values", next.Line)
	case !errors.Is(err, io.EOF):
		return nil, syntaxError(b, err)
	}
	root := doc.Content[0]
	if root.Kind == yaml.AliasNode {
		root = root.Alias
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("holds %s at line %d of the file; want a JSON or YAML object of string values (key: value lines)", kindOf(root), root.Line)
	}
	values := map[string]string{}
	first := map[string]int{} // key -> line it was first written on
	var faults []string
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			faults = append(faults, fmt.Sprintf("a key on line %d of the file is %s, not a name", k.Line, kindOf(k)))
			continue
		}
		name := keyName(k.Value)
		if k.Tag == "!!merge" {
			faults = append(faults, fmt.Sprintf("a merge key (<<) on line %d of the file; write the keys out", k.Line))
			continue
		}
		if line, seen := first[k.Value]; seen {
			faults = append(faults, fmt.Sprintf("key %s is written twice, on lines %d and %d of the file; keep one", name, line, k.Line))
			continue
		}
		first[k.Value] = k.Line
		if v.Kind == yaml.AliasNode {
			v = v.Alias
		}
		if v.Kind != yaml.ScalarNode {
			faults = append(faults, fmt.Sprintf("key %s, on line %d of the file: the value is %s, not a string", name, k.Line, kindOf(v)))
			continue
		}
		var s string
		if err := v.Decode(&s); err != nil {
			faults = append(faults, fmt.Sprintf("key %s, on line %d of the file: the value is not a string (tag %s)", name, k.Line, v.Tag))
			continue
		}
		values[k.Value] = s
	}
	if len(faults) > 0 {
		return nil, errors.New(strings.Join(faults, "; "))
	}
	return values, nil
}

// syntaxError says where b stops being JSON or YAML, in words of our own.
func syntaxError(b []byte, err error) error {
	line, hint := config.SyntaxError(b, err)
	msg := "is not valid JSON or YAML"
	if line > 0 {
		msg += fmt.Sprintf(" at line %d of the file", line)
	}
	if hint != "" {
		msg += ": " + hint
	}
	return errors.New(msg)
}

// kindOf names the kind of YAML node n for a message.
func kindOf(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "an object"
	case yaml.SequenceNode:
		return "a list"
	}
	return "a single value"
}

// keyName shows a key, quoted when it is not a plain name. Keys are not
// secret (vendor.Description.RequiredKeys names them).
func keyName(k string) string {
	if k != "" && strings.Trim(k, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == "" {
		return k
	}
	return strconv.Quote(k)
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
