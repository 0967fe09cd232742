package config

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Problem is one thing wrong with a config, located by its key path.
type Problem struct {
	Path string // e.g. "upstreams.hgem.base_url"
	Msg  string
}

func (p Problem) String() string { return p.Path + ": " + p.Msg }

// Problems is every problem found in a config; as an error it prints one per line.
type Problems []Problem

func (ps *Problems) add(path, format string, args ...any) {
	*ps = append(*ps, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (ps *Problems) Error() string {
	lines := make([]string, len(*ps))
	for i, p := range *ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

var (
	typeOfConfig   = reflect.TypeFor[Config]()
	typeOfDuration = reflect.TypeFor[Duration]()
)

// checkNode walks the YAML tree against the Go type it will be decoded into
// and records every unknown key and mistyped value with its key path. yaml.v3
// alone reports these by line number and stops at the first custom decode
// error; the contract wants the key path and every problem at once.
func checkNode(ps *Problems, path string, n *yaml.Node, t reflect.Type) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an empty value leaves the default in place
	}
	where := pathOr(path)
	switch {
	case t == typeOfDuration:
		if n.Kind != yaml.ScalarNode {
			ps.add(where, "must be a duration such as 30s")
			return
		}
		d, err := time.ParseDuration(n.Value)
		if err != nil {
			ps.add(where, "%q is not a duration (use a unit: 500ms, 30s, 5m)", n.Value)
		} else if d < 0 {
			ps.add(where, "must not be negative")
		}
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			ps.add(where, "must be a mapping")
			return
		}
		fields := map[string]reflect.Type{}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			fields[name] = f.Type
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i].Value, n.Content[i+1]
			ft, ok := fields[k]
			if !ok {
				ps.add(join(path, k), "unknown key (line %d); known keys: %s", n.Content[i].Line, known(fields))
				continue
			}
			checkNode(ps, join(path, k), v, ft)
		}
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			ps.add(where, "must be a mapping")
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			checkNode(ps, join(path, n.Content[i].Value), n.Content[i+1], t.Elem())
		}
	case t.Kind() == reflect.String:
		if n.Kind != yaml.ScalarNode {
			ps.add(where, "must be a string")
		}
	case t.Kind() == reflect.Int64:
		if _, err := strconv.ParseInt(n.Value, 0, 64); n.Kind != yaml.ScalarNode || err != nil {
			ps.add(where, "must be a whole number")
		}
	case t.Kind() == reflect.Bool:
		if _, err := strconv.ParseBool(n.Value); n.Kind != yaml.ScalarNode || err != nil || n.Tag != "!!bool" {
			ps.add(where, "must be true or false")
		}
	case t.Kind() == reflect.Float64:
		if _, err := strconv.ParseFloat(n.Value, 64); n.Kind != yaml.ScalarNode || err != nil {
			ps.add(where, "must be a number")
		}
	default:
		panic("config: no schema check for " + t.String())
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func pathOr(path string) string {
	if path == "" {
		return "(file)"
	}
	return path
}

func known(fields map[string]reflect.Type) string {
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}
