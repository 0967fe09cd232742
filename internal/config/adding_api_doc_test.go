package config

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/tokenproxy/tokenproxy/internal/vendor"
)

// docs/adding-an-api.md cannot drift: it shows each built-in vendor's
// description as the file the binary embeds, that text written under
// `custom:` describes the same vendor, and every config in it loads.
func TestAddingAnAPIDoc(t *testing.T) {
	b, err := os.ReadFile("../../docs/adding-an-api.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, name := range vendor.Builtins {
		text, err := vendor.BuiltinYAML(name)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(doc, "```yaml\n"+string(text)+"```") {
			t.Errorf("the doc does not show internal/vendor/builtin/%s.yaml as it is", name)
		}
		var custom vendor.Description
		if err := yaml.Unmarshal(text, &custom); err != nil {
			t.Fatal(err)
		}
		u := Upstream{Type: vendor.TypeCustom, Custom: &custom}
		got, _ := u.Vendor()
		want, _ := vendor.Builtin(name)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s under custom: %+v, want %+v", name, got, want)
		}
	}
	blocks := 0
	for _, part := range strings.Split(doc, "```yaml\n")[1:] {
		block, _, _ := strings.Cut(part, "```")
		if !strings.HasPrefix(block, "upstreams:") {
			continue
		}
		blocks++
		if _, err := Parse([]byte(block)); err != nil {
			t.Errorf("a config in the doc does not load:\n%s\n%v", block, err)
		}
	}
	if blocks < 4 {
		t.Errorf("%d configs in the doc, want one per generic type and HGEM's", blocks)
	}
}
