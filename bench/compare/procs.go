package compare

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/switchyard-dev/switchyard/loadtest"
)

// child is a process the suite started: in the foreground, its output in
// a log file, killed with the suite (Pdeathsig) if the suite dies.
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

func startChild(dir, name, bin string, args ...string) (*child, error) {
	logPath := filepath.Join(dir, name+".log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Dir = dir
	// Its own process group, so stop can reach nginx's workers too; killed
	// if the suite's thread dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		lf.Close()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// logTail is the last few lines of the child's log, for errors.
func (c *child) logTail() string {
	b, _ := os.ReadFile(c.logPath)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return strings.Join(lines, "\n")
}

// stop sends SIGTERM and waits up to 5 s, then kills; anything left in
// the child's process group (nginx workers) is killed last.
func (c *child) stop() {
	pgid := c.pid()
	if !c.exited() {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// pids is the child and its descendants (nginx: master and workers).
func (c *child) pids() []int {
	return append([]int{c.pid()}, descendants(c.pid())...)
}

// descendants lists the processes below pid, from /proc.
func descendants(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	parent := map[int]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if pp, err := ParsePPID(b); err == nil {
			parent[p] = pp
		}
	}
	var out []int
	want := map[int]bool{pid: true}
	for changed := true; changed; {
		changed = false
		for p, pp := range parent {
			if want[pp] && !want[p] {
				want[p] = true
				out = append(out, p)
				changed = true
			}
		}
	}
	return out
}

// ParsePPID reads the parent pid (field 4) from /proc/<pid>/stat contents.
func ParsePPID(b []byte) (int, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("stat: no ')' after the command name")
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 2 {
		return 0, errors.New("stat: too few fields")
	}
	return strconv.Atoi(string(f[1]))
}

// procSampler sums CPU and RSS over a set of processes during a run.
type procSampler struct {
	pids     []int
	startCPU time.Duration
	peakRSS  int64
	stopCh   chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
}

func sampleSum(pids []int) (loadtest.ProcSample, error) {
	var sum loadtest.ProcSample
	for _, p := range pids {
		s, err := loadtest.ReadProc(p)
		if err != nil {
			return sum, err
		}
		sum.CPU += s.CPU
		sum.RSSBytes += s.RSSBytes
	}
	return sum, nil
}

func startSampler(pids []int) (*procSampler, error) {
	s0, err := sampleSum(pids)
	if err != nil {
		return nil, err
	}
	ps := &procSampler{pids: pids, startCPU: s0.CPU, peakRSS: s0.RSSBytes, stopCh: make(chan struct{})}
	ps.wg.Add(1)
	go func() {
		defer ps.wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ps.stopCh:
				return
			case <-t.C:
				if s, err := sampleSum(pids); err == nil {
					ps.mu.Lock()
					ps.peakRSS = max(ps.peakRSS, s.RSSBytes)
					ps.mu.Unlock()
				}
			}
		}
	}()
	return ps, nil
}

// stop returns the CPU seconds used since the start and the peak RSS.
func (ps *procSampler) stop() (cpu float64, peakRSS int64, err error) {
	close(ps.stopCh)
	ps.wg.Wait()
	s1, err := sampleSum(ps.pids)
	if err != nil {
		return 0, 0, err
	}
	return (s1.CPU - ps.startCPU).Seconds(), max(ps.peakRSS, s1.RSSBytes), nil
}

// freePort returns a free 127.0.0.1 port (closed again: the child binds it).
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitOK polls url until it answers 200, the child exits, or timeout.
func waitOK(ctx context.Context, hc *http.Client, url string, c *child, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		if c != nil && c.exited() {
			return fmt.Errorf("%s exited (%v) before %s answered 200:\n%s", c.name, c.err, url, c.logTail())
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := hc.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	msg := fmt.Sprintf("%s did not answer 200 within %s (last: %s)", url, timeout, last)
	if c != nil {
		msg += "\n" + c.logTail()
	}
	return errors.New(msg)
}
