package main

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestShadowAgentEntry: the binary serves as the shadow agent from the
// proxy package's init (before main looks at its arguments), refuses the
// subcommand by hand, and checks --shadow-process.
func TestShadowAgentEntry(t *testing.T) {
	bin := buildSwitchyard(t)
	run := func(env []string, args ...string) (int, string) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	// Started as an agent without the proxy's socket (descriptor 3): the
	// agent itself says so (exit 2), whatever the arguments.
	for _, args := range [][]string{{"shadow-agent"}, {"no-such-command"}} {
		if code, out := run([]string{"SWITCHYARD_SHADOW_AGENT=1"}, args...); code != 2 || !strings.Contains(out, "no socket from the proxy") {
			t.Fatalf("%v as agent: exit %d\n%s", args, code, out)
		}
	}
	if code, out := run(nil, "shadow-agent"); code != 1 || !strings.Contains(out, "not by hand") {
		t.Fatalf("shadow-agent by hand: exit %d\n%s", code, out)
	}
	if code, out := run(nil, "proxy", "--shadow-process=thread"); code != 1 || !strings.Contains(out, "--shadow-process: want agent or inline") {
		t.Fatalf("--shadow-process=thread: exit %d\n%s", code, out)
	}
	if code, out := run(nil, "proxy", "--shadow-agent-priority=high"); code != 1 || !strings.Contains(out, `--shadow-agent-priority: shadow agent priority "high": want idle, low or normal`) {
		t.Fatalf("--shadow-agent-priority=high: exit %d\n%s", code, out)
	}
}
