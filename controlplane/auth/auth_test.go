package auth

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const editorToken = "editor-token-0123456789"

func TestLoadTokens(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, fmt.Sprint(len(s), ".yaml"))
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, err := LoadTokens(write("tokens:\n  - {subject: a, role: editor, token: " + editorToken + "}\n")); err != nil {
		t.Fatal(err)
	}
	for s, want := range map[string]string{
		"tokens:\n  - {subject: a, role: admin, token: " + editorToken + "}\n":   `tokens[0].role: unknown role "admin" (allowed: viewer, editor, operator)`,
		"tokens:\n  - {subject: a, role: viewer, token: short}\n":                "tokens[0].token: at least 16 characters",
		"tokens:\n  - {subject: '', role: viewer, token: " + editorToken + "}\n": "tokens[0].subject: required",
		"tokens:\n  - {subject: a, role: viewer, tokn: x}\n":                     "field tokn not found",
		"tokens: []\n": "no tokens",
		"tokens:\n  - {subject: a, role: viewer, token: " + editorToken + "}\n  - {subject: b, role: operator, token: " + editorToken + "}\n": "tokens[1].token: the same token is given twice",
	} {
		if _, err := LoadTokens(write(s)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: want %q, got %v", s, want, err)
		}
	}
}
