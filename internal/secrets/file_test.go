package secrets

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// Each fault of a credentials file is said as what it is, with the key
// and the line in that file, and never with a value: a new user's
// duplicate key, YAML syntax error and nested object all read "not a JSON
// or YAML object of string values". Every value written is the canary.
func TestFileFaultsAreNamedByKeyAndLine(t *testing.T) {
	const v = canaryValue
	cases := []struct{ name, text, want string }{
		{"duplicate key", "client_id: " + v + "\nclient_secret: " + v + "\nclient_id: " + v + "\n",
			"key client_id is written twice, on lines 1 and 3 of the file; keep one"},
		{"duplicate key, JSON", `{"client_id": "` + v + `",` + "\n" + ` "client_id": "` + v + `"}`,
			"key client_id is written twice, on lines 1 and 2 of the file; keep one"},
		{"nested object", "client_id: " + v + "\nclient_secret:\n  value: " + v + "\n",
			"key client_secret, on line 2 of the file: the value is an object, not a string"},
		{"nested object, JSON", `{"client_id": {"v": "` + v + `"}}`,
			"key client_id, on line 1 of the file: the value is an object, not a string"},
		{"a list", "api_key: [" + v + ", " + v + "]\n",
			"key api_key, on line 1 of the file: the value is a list, not a string"},
		{"every fault at once", "a: {x: " + v + "}\nb: " + v + "\nb: " + v + "\nc: [" + v + "]\n",
			"key a, on line 1 of the file: the value is an object, not a string; key b is written twice, on lines 2 and 3 of the file; keep one; key c, on line 4 of the file: the value is a list, not a string"},
		{"an odd key is quoted", "\"client id\": {x: " + v + "}\n",
			`key "client id", on line 1 of the file: the value is an object, not a string`},
		{"mapping in a value", "client_id: a\nclient_secret: " + v + ": " + v + "\n",
			"is not valid JSON or YAML at line 2 of the file"},
		{"indentation", "client_id: a\n  client_secret: " + v + "\n",
			"is not valid JSON or YAML at line 2 of the file"},
		{"tab", "client_id: a\n\tclient_secret: " + v + "\n",
			"is not valid JSON or YAML at line 2 of the file: a tab in the indentation; YAML indents with spaces only"},
		{"unclosed quote", "client_id: a\nclient_secret: \"" + v + "\n",
			"is not valid JSON or YAML at line 2 of the file: a quoted string that starts here is never closed"},
		{"JSON without a comma", "{\"client_id\": \"" + v + "\"\n \"client_secret\": \"" + v + "\"}\n",
			"is not valid JSON or YAML at line 1 of the file"},
		{"JSON never closed", "{\"client_id\": \"" + v + "\",\n",
			"is not valid JSON or YAML at line 1 of the file"},
		{"bad escape", "client_secret: \"" + v + `\q` + "\"\n",
			"is not valid JSON or YAML at line 1 of the file"},
		{"a list at the top", "- " + v + "\n- " + v + "\n",
			"holds a list at line 1 of the file; want a JSON or YAML object of string values (key: value lines)"},
		{"a value alone", v + "\n",
			"holds a single value at line 1 of the file; want a JSON or YAML object of string values (key: value lines)"},
		{"empty", "# nothing yet\n",
			"is empty; want a JSON or YAML object of string values"},
		{"two documents", "client_id: " + v + "\n---\nclient_secret: " + v + "\n",
			"a second YAML document starts at line 2 of the file (after ---); want one object of string values"},
		{"not base64", "client_secret: !!binary " + v + "\n",
			"key client_secret, on line 1 of the file: the value is not a string (tag !!binary)"},
		{"not a number", "client_id: a\nclient_secret: !!int " + v + "\n",
			"key client_secret, on line 2 of the file: the value is not a string (tag !!int)"},
		{"a key that is an object", "? {k: " + v + "}\n: " + v + "\n",
			"a key on line 1 of the file is an object, not a name"},
		{"a merge key", "base: &b {client_id: " + v + "}\n<<: *b\n",
			"key base, on line 1 of the file: the value is an object, not a string; a merge key (<<) on line 2 of the file; write the keys out"},
	}
	dir := t.TempDir()
	leaked := 0 // of yaml.v3's own messages, as a check that the canary can leak
	for i, c := range cases {
		path := filepath.Join(dir, "bad"+string(rune('a'+i))+".yaml")
		if err := os.WriteFile(path, []byte(c.text), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := File(path).Read(context.Background())
		want := "file:" + path + ": " + c.want
		if err == nil || err.Error() != want {
			t.Errorf("%s: got %v\nwant %s", c.name, err, want)
		}
		// yaml.v3 quotes a value's first 7 bytes: look for them too.
		if err != nil && strings.Contains(err.Error(), v[:7]) {
			t.Errorf("%s: the error shows a value: %v", c.name, err)
		}
		var m map[string]string
		if err := yaml.Unmarshal([]byte(c.text), &m); err != nil && strings.Contains(err.Error(), v[:7]) {
			leaked++
		}
	}
	if leaked == 0 {
		t.Error("no case makes the parser's own message quote a value: the canary checks nothing")
	}
}

// What decodes as before still does: numbers and booleans as written, an
// empty value as "", an alias of a value, JSON as JSON.
func TestFileReadsWhatItDid(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	text := "client_id: 12345\nenabled: true\nempty:\nsecret: &s abc\nagain: *s\n'quoted key': x\n"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := File(path).Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"client_id": "12345", "enabled": "true", "empty": "", "secret": "abc", "again": "abc", "quoted key": "x"} {
		if got := c.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if len(c.Keys()) != 6 {
		t.Errorf("keys %v", c.Keys())
	}
}
