//go:build linux

package e2e

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that the story leaves no goroutine of its own behind
// (traffic workers, HTTP connections, process waiters).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
