package vendor

import (
	"bytes"
	"embed"
	"fmt"

	"gopkg.in/yaml.v3"
)

// Builtins are the built-in vendors' type names, in the order the docs and
// `tokenproxy dev` give them. Each is described by builtin/<name>.yaml, in
// the format a `type: custom` upstream writes under `custom:`.
var Builtins = []string{"prominsight", "inspera", "hgem", "prodoscore"}

//go:embed builtin/*.yaml
var builtinFiles embed.FS

var builtins = map[string]*Description{}

func init() {
	for _, name := range Builtins {
		d, err := decodeBuiltin(name)
		if err != nil {
			panic(err) // TestBuiltinsCheck keeps this from shipping
		}
		builtins[name] = d
	}
}

func decodeBuiltin(name string) (*Description, error) {
	b, err := BuiltinYAML(name)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	d := &Description{}
	if err := dec.Decode(d); err != nil {
		return nil, fmt.Errorf("vendor: builtin/%s.yaml: %w", name, err)
	}
	return d, nil
}

// BuiltinYAML is the text of a built-in vendor's description.
func BuiltinYAML(name string) ([]byte, error) {
	return builtinFiles.ReadFile("builtin/" + name + ".yaml")
}

// Builtin returns the description of a built-in vendor. It is shared:
// callers must not change it.
func Builtin(name string) (*Description, bool) {
	d, ok := builtins[name]
	return d, ok
}
