package vene

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// The package carries copies of the C headers so that it builds from a module cache or
// vendor/ directory; inside the repository they must equal include/ (after regenerating
// include/vene.h: cp include/vene.h include/vene_plugin.h bindings/go/).
func TestHeadersMatchRepository(t *testing.T) {
	for _, name := range []string{"vene.h", "vene_plugin.h"} {
		want, err := os.ReadFile(filepath.Join("..", "..", "include", name))
		if err != nil {
			t.Skipf("not inside the vene repository: %v", err)
		}
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("bindings/go/%s differs from include/%s: run cp include/vene.h include/vene_plugin.h bindings/go/", name, name)
		}
	}
}
