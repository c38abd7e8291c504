package main

import (
	"fmt"
	"os"
	"strings"
)

// readTokenFile reads a bearer token from path ("" when path is ""): the
// file's content without surrounding white space, at least 16 characters.
func readTokenFile(flagName, path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %v", flagName, err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < 16 {
		return "", fmt.Errorf("%s %s: the token must be at least 16 characters, got %d", flagName, path, len(tok))
	}
	return tok, nil
}
