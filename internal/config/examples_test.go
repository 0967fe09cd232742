package config

import (
	"path/filepath"
	"testing"
)

// The examples in configs/ are what users copy: each must load as it is.
func TestExampleConfigsLoad(t *testing.T) {
	files, _ := filepath.Glob("../../configs/*.yaml")
	if len(files) < 6 {
		t.Fatalf("found %d example configs, want one per vendor, all.yaml and vault.yaml", len(files))
	}
	for _, f := range files {
		if _, err := Load(f); err != nil {
			t.Errorf("%s:\n%v", f, err)
		}
	}
}
