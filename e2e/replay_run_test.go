//go:build linux

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The docs replay's runner: one shell per replayed file, in a folder laid
// out like a checkout (bin/ with the built binaries, e2e/traffic.sh, .state
// for `switchyard up`), and a fresh stack started with
// `switchyard up --restart=never --any-ports`. The commands' addresses are
// the documented defaults; the runner maps them to the stack's ports on
// the way in and back on the way out.

// cmdTimeout bounds one command (a background command's wait included).
const cmdTimeout = 90 * time.Second

// shell is one bash reading commands from a pipe; each command's output
// (stdout and stderr together) ends at a line with a token and its exit
// status.
type shell struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	mu     sync.Mutex
	buf    []byte
	notify chan struct{}
	done   chan struct{}
	n      int
}

func (s *shell) Write(p []byte) (int, error) {
	s.mu.Lock()
	s.buf = append(s.buf, p...)
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
	return len(p), nil
}

func startShell(t *testing.T, dir string, env []string) *shell {
	t.Helper()
	s := &shell{notify: make(chan struct{}, 1), done: make(chan struct{})}
	s.cmd = exec.Command("bash", "--noprofile", "--norc")
	s.cmd.Dir = dir
	s.cmd.Env = env
	s.cmd.Stdout, s.cmd.Stderr = s, s
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	in, err := s.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.in = in
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		// The shell's process group holds its background jobs too.
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	})
	return s
}

// run runs one command (stdin from /dev/null) and returns what it printed
// and its exit status.
func (s *shell) run(command string, timeout time.Duration) (string, int, error) {
	s.n++
	token := fmt.Sprintf("__replay_done_%d_%d__", os.Getpid(), s.n)
	if _, err := fmt.Fprintf(s.in, "{\n%s\n} </dev/null 2>&1; printf '\\n%s %%d\\n' \"$?\"\n", command, token); err != nil {
		return "", 0, fmt.Errorf("write to the shell: %v", err)
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	re := regexp.MustCompile(`\n` + token + ` (\d+)\n`)
	for {
		s.mu.Lock()
		if m := re.FindSubmatchIndex(s.buf); m != nil {
			out := string(s.buf[:m[0]])
			code, _ := strconv.Atoi(string(s.buf[m[2]:m[3]]))
			s.buf = s.buf[m[1]:]
			s.mu.Unlock()
			return out, code, nil
		}
		partial := string(s.buf)
		s.mu.Unlock()
		select {
		case <-s.notify:
		case <-s.done:
			return partial, 0, fmt.Errorf("the shell exited (%v)", s.cmd.ProcessState)
		case <-deadline.C:
			return partial, 0, fmt.Errorf("did not finish within %s", timeout)
		}
	}
}

// replayer replays one file against its own stack.
type replayer struct {
	t       *testing.T
	bins    binaries
	file    string
	dir     string // the pretend checkout: bin/, e2e/, .state
	env     []string
	sh      *shell
	up      *upProcess
	ports   portMap
	upSeen  int             // how much of up's output was compared already
	started map[string]bool // background commands by name
}

// replayDoc replays the shell sessions of one file (README.md,
// docs/walkthrough.md) in order, each file section as a subtest.
func replayDoc(t *testing.T, bins binaries, file string) {
	blocks, err := readDoc(docPath(file), file)
	if err != nil {
		t.Fatal(err)
	}
	r := &replayer{t: t, bins: bins, file: file, dir: t.TempDir(), started: map[string]bool{}}
	r.layout()
	// The stack is up before the first block: the up block's command line
	// (its output is compared in its place), else (the README starts with
	// `make up`) `up --restart=never`.
	upArgs := []string{"up", "--restart=never"}
	for _, b := range blocks {
		for _, c := range b.cmds {
			if b.verb == "up" && isUpCommand(c.text) {
				upArgs = strings.Fields(strings.TrimPrefix(c.text, "bin/switchyard "))
			}
		}
	}
	r.startUp(t, upArgs)
	// One subtest per section, in order; a section that stopped half-way
	// (a command failed to run) skips the rest.
	var sections []string
	bySection := map[string][]docBlock{}
	for _, b := range blocks {
		if _, ok := bySection[b.section]; !ok {
			sections = append(sections, b.section)
		}
		bySection[b.section] = append(bySection[b.section], b)
	}
	ok := true
	for _, sec := range sections {
		name := sectionName(sec)
		if !ok {
			t.Run(name, func(t *testing.T) { t.Skip("an earlier section stopped half-way") })
			continue
		}
		completed := false
		t.Run(name, func(t *testing.T) {
			for _, b := range bySection[sec] {
				r.block(t, b)
			}
			completed = true
		})
		ok = completed
	}
	if r.up != nil {
		select {
		case <-r.up.done:
		default:
			if err := r.up.stop(t, 30*time.Second); err != nil {
				t.Errorf("switchyard up after SIGINT: %v", err)
			}
		}
		if left := leftAlive(r.up.info.Processes, 5*time.Second); len(left) > 0 {
			killAll(r.up.info.Processes)
			t.Errorf("processes left behind: %v", left)
		}
	}
}

var nonName = regexp.MustCompile(`[^a-z0-9]+`)

func sectionName(s string) string {
	n := strings.Trim(nonName.ReplaceAllString(strings.ToLower(s), "-"), "-")
	if n == "" {
		return "top"
	}
	return n
}

// layout makes the pretend checkout and the shell's environment: only
// PATH, a fresh HOME and config home, SYCTL_SERVER (set once the stack is
// up) and a C locale.
func (r *replayer) layout() {
	t := r.t
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"bin", "e2e", "home", "bg"} {
		if err := os.MkdirAll(filepath.Join(r.dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range [][2]string{
		{r.bins.switchyard, "bin/switchyard"},
		{r.bins.syctl, "bin/syctl"},
		{filepath.Join(root, "e2e", "traffic.sh"), "e2e/traffic.sh"},
	} {
		if err := os.Symlink(l[0], filepath.Join(r.dir, l[1])); err != nil {
			t.Fatal(err)
		}
	}
	home := filepath.Join(r.dir, "home")
	r.env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "XDG_CONFIG_HOME=" + home, "LC_ALL=C.UTF-8", "TZ=UTC",
		"REPLAY_BG=" + filepath.Join(r.dir, "bg")}
	lib := os.Getenv("SWITCHYARD_ORT_LIB")
	if lib == "" {
		lib = filepath.Join(root, "third_party", "onnxruntime", "libonnxruntime.so.1")
	}
	r.env = append(r.env, "SWITCHYARD_ORT_LIB="+lib)
}

// startUp starts the stack in the pretend checkout and the shell after it
// (SYCTL_SERVER names the stack's control plane).
func (r *replayer) startUp(t *testing.T, args []string) {
	t.Helper()
	if r.up != nil {
		t.Fatalf("%s: a second switchyard up", r.file)
	}
	args = append(args, "--any-ports", "--ready-timeout", "90s")
	r.up = startUpWith(t, r.bins.switchyard, upOptions{dir: r.dir, stateDir: ".state", args: args, combined: true, env: r.env})
	var xds struct {
		XDS string `json:"xds"`
	}
	b, err := os.ReadFile(filepath.Join(r.dir, ".state", "up.json"))
	if err == nil {
		err = json.Unmarshal(b, &xds)
	}
	if err != nil {
		t.Fatalf("up.json: %v", err)
	}
	r.ports = newPortMap(r.up.info, xds.XDS)
	r.env = append(r.env, "SYCTL_SERVER="+r.up.info.API)
	r.sh = startShell(t, r.dir, r.env)
}

// block replays one block.
func (r *replayer) block(t *testing.T, b docBlock) {
	t.Helper()
	at := fmt.Sprintf("%s:%d", b.file, b.line)
	switch b.verb {
	case "skip":
		t.Logf("%s: not replayed: %s", at, b.arg)
	case "up":
		for _, c := range b.cmds {
			if !isUpCommand(c.text) {
				continue // make build: the test built bin/ already
			}
			r.compareUp(t, fmt.Sprintf("%s:%d", b.file, c.line), c.want, false)
		}
	case "output":
		if b.arg == "up" {
			r.compareUp(t, at, b.want, false)
			return
		}
		if !r.started[b.arg] {
			t.Fatalf("%s: output of %q, which no background block started", at, b.arg)
		}
		out, code, err := r.sh.run(fmt.Sprintf(`wait "$(cat "$REPLAY_BG/%[1]s.pid")"; st=$?; cat "$REPLAY_BG/%[1]s.out"; (exit $st)`, b.arg), cmdTimeout)
		r.check(t, at, "(background "+b.arg+")", b.want, out, code, err, backgroundMasks, true)
	case "background":
		c := b.cmds[0]
		r.started[b.arg] = true
		cmd := fmt.Sprintf("{\n%s\n} </dev/null >\"$REPLAY_BG/%s.out\" 2>&1 & echo $! >\"$REPLAY_BG/%s.pid\"", r.ports.toActual(c.text), b.arg, b.arg)
		if _, code, err := r.sh.run(cmd, cmdTimeout); err != nil || code != 0 {
			t.Fatalf("%s:%d: starting %q in the background: exit %d %v", b.file, c.line, c.text, code, err)
		}
	case "ctrl-c":
		if r.up == nil {
			t.Fatalf("%s: ctrl-c with no stack", at)
		}
		if err := r.up.stop(t, 30*time.Second); err != nil {
			t.Errorf("%s: switchyard up after Ctrl-C: %v", at, err)
		}
		var want []docLine
		for _, l := range b.want {
			if l.text == "^C" {
				// The keystroke's echo: up starts its answer on a new line.
				l.text = ""
			}
			want = append(want, l)
		}
		r.compareUp(t, at, want, true)
	default:
		for _, c := range b.cmds {
			out, code, err := r.sh.run(r.ports.toActual(c.text), cmdTimeout)
			r.check(t, fmt.Sprintf("%s:%d", b.file, c.line), c.text, c.want, out, code, err, nil)
		}
	}
}

// check judges one command's run: it ran, exited 0 and printed what the
// docs show.
func (r *replayer) check(t *testing.T, at, command string, want []docLine, out string, code int, err error, extra []mask, anyOrder ...bool) {
	t.Helper()
	out = r.ports.toDoc(out)
	if err != nil {
		t.Fatalf("%s: $ %s\n%v; printed so far:\n%s", at, command, err, out)
	}
	if code != 0 {
		t.Errorf("%s: $ %s\nexit status %d, want 0; it printed:\n%s", at, command, code, out)
		return
	}
	if d := compareOutput(r.file, want, out, extra, anyOrder...); d != "" {
		t.Errorf("%s: $ %s\nthe output differs from the docs (masks: docs/testing.md, \"The docs replay\")\n%s", at, command, d)
	}
}

// compareUp compares up's terminal output since the last look with want,
// waiting (bounded) for it to appear; final: up has exited, nothing more
// comes.
func (r *replayer) compareUp(t *testing.T, at string, want []docLine, final bool) {
	t.Helper()
	if r.up == nil {
		t.Fatalf("%s: no stack", at)
	}
	var got string
	deadline := time.Now().Add(30 * time.Second)
	for {
		all := r.ports.toDoc(r.up.stdout.String())
		got = all[r.upSeen:]
		if compareOutput(r.file, want, got, nil) == "" {
			r.upSeen = len(all)
			return
		}
		if final || time.Now().After(deadline) {
			break
		}
		select {
		case <-r.up.done:
			final = true
		case <-time.After(50 * time.Millisecond):
		}
	}
	all := r.ports.toDoc(r.up.stdout.String())
	r.upSeen = len(all)
	t.Errorf("%s: switchyard up's terminal differs from the docs (masks: docs/testing.md, \"The docs replay\")\n%s", at, compareOutput(r.file, want, got, nil))
}

// upOptions: how startUpWith runs `switchyard up`.
type upOptions struct {
	dir      string   // working directory ("" = the test's)
	stateDir string   // --state-dir
	args     []string // starting with "up"
	combined bool     // stdout and stderr in one buffer, as a terminal
	env      []string // nil: the test's
}

var _ = bytes.MinRead
