package config

import (
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/tokenproxy/tokenproxy/internal/suggest"
)

// Problem is one thing wrong with a config, located by its key path.
type Problem struct {
	// Path is the key path ("upstreams.hgem.base_url"); for a problem of the
	// file as a whole, the file's name, with ":<line>" when one is known.
	Path string
	Msg  string
	// Also names other key paths the problem is about (both of two keys
	// that clash), so that their lines are given too.
	Also []string
	// Env names the environment variable that would settle the problem
	// where tokenproxy runs ($VAULT_ADDR for a missing secrets.vault.address),
	// so that a check away from that environment (validate --offline) can
	// tell it apart; "" for a problem of the file itself.
	Env string
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

// schema walks the YAML tree against the Go type it will be decoded into
// and records every unknown key, mistyped value and key written twice with
// its key path. yaml.v3 alone reports these by line number, stops at the
// first custom decode error, and on a key written twice drops the whole
// mapping; the contract wants the key path and every problem at once.
type schema struct {
	file  string // the config file's name, for problems of the file as a whole
	ps    Problems
	lines map[string]int // key path -> line of its key, for Validate's problems
}

// check records the problems of n against t at path. A key written twice
// is reported, and the earlier pair dropped from n so that decoding goes on
// with the later one and the rest of the file is still checked.
func (s *schema) check(path string, n *yaml.Node, t reflect.Type) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an empty value leaves the default in place
	}
	where := path
	if where == "" {
		where = s.file
	}
	switch {
	case t == typeOfDuration:
		if n.Kind != yaml.ScalarNode {
			s.at(where, n, "must be a duration such as 30s")
			return
		}
		d, err := time.ParseDuration(n.Value)
		if err != nil {
			s.at(where, n, "%q is not a duration (use a unit: 500ms, 30s, 5m)", n.Value)
		} else if d < 0 {
			s.at(where, n, "must not be negative")
		}
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			s.at(where, n, "must be a mapping")
			return
		}
		fields := map[string]reflect.Type{}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || name == "-" {
				continue // not a key of the file
			}
			fields[name] = f.Type
		}
		s.pairs(path, n, func(key *yaml.Node, v *yaml.Node) {
			ft, ok := fields[key.Value]
			if !ok {
				names := known(fields)
				if hint := suggest.DidYouMean(key.Value, names); hint != "" {
					s.ps.add(join(path, key.Value), "unknown key (line %d)%s", key.Line, hint)
				} else {
					s.ps.add(join(path, key.Value), "unknown key (line %d); known keys: %s", key.Line, strings.Join(names, ", "))
				}
				return
			}
			s.check(join(path, key.Value), v, ft)
		})
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			s.at(where, n, "must be a mapping")
			return
		}
		s.pairs(path, n, func(key *yaml.Node, v *yaml.Node) {
			s.check(join(path, key.Value), v, t.Elem())
		})
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			s.at(where, n, "must be a list")
			return
		}
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			s.lines[p] = item.Line
			s.check(p, item, t.Elem())
		}
	case t.Kind() == reflect.String:
		if n.Kind != yaml.ScalarNode {
			s.at(where, n, "must be a string")
		}
	case t.Kind() == reflect.Int64:
		if _, err := strconv.ParseInt(n.Value, 0, 64); n.Kind != yaml.ScalarNode || err != nil {
			s.at(where, n, "must be a whole number")
		}
	case t.Kind() == reflect.Bool:
		if _, err := strconv.ParseBool(n.Value); n.Kind != yaml.ScalarNode || err != nil || n.Tag != "!!bool" {
			s.at(where, n, "must be true or false")
		}
	case t.Kind() == reflect.Float64:
		if _, err := strconv.ParseFloat(n.Value, 64); n.Kind != yaml.ScalarNode || err != nil {
			s.at(where, n, "must be a number")
		}
	default:
		panic("config: no schema check for " + t.String())
	}
}

// at records a problem of the value n, with its line.
func (s *schema) at(path string, n *yaml.Node, format string, args ...any) {
	s.ps.add(path, format+" (line %d)", append(args, n.Line)...)
}

// pairs calls each for every key and value of the mapping n, reports keys
// written twice, and leaves only the last of each in n.
func (s *schema) pairs(path string, n *yaml.Node, each func(key, value *yaml.Node)) {
	// A copy: an alias inside may lead back to n itself.
	content := n.Content
	first := map[string]int{} // key -> line of its first occurrence
	last := map[string]int{}  // key -> index of its last occurrence
	for i := 0; i+1 < len(content); i += 2 {
		last[content[i].Value] = i
	}
	var kept []*yaml.Node
	for i := 0; i+1 < len(content); i += 2 {
		key, v := content[i], content[i+1]
		p := join(path, key.Value)
		if line, seen := first[key.Value]; seen {
			s.ps.add(p, "written twice, on lines %d and %d; keep one", line, key.Line)
		} else {
			first[key.Value] = key.Line
		}
		if last[key.Value] == i {
			kept = append(kept, key, v)
			s.lines[p] = key.Line
		}
		each(key, v)
	}
	n.Content = kept
}

// join appends key to a key path. A key that is not a plain name (empty,
// or holding a dot, a space or a quote) is quoted, so that the path still
// reads as one and shows where the key starts and ends.
func join(path, key string) string {
	if !plainKeyRE.MatchString(key) {
		key = strconv.Quote(key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

var plainKeyRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func known(fields map[string]reflect.Type) []string {
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}
