package loadtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// ClockTicks is USER_HZ, the unit of /proc/<pid>/stat times on Linux.
const ClockTicks = 100

// ProcSample is one reading of a process.
type ProcSample struct {
	CPU      time.Duration // utime + stime
	RSSBytes int64         // VmRSS
}

// ParseStat returns utime+stime from the contents of /proc/<pid>/stat.
func ParseStat(b []byte) (time.Duration, error) {
	// The command name (field 2) is in parentheses and may hold spaces;
	// fields after the last ')' start at field 3 (state).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat: no ')' after the command name")
	}
	f := bytes.Fields(b[i+1:])
	// field 14 utime, 15 stime -> indexes 11, 12 after the ')'.
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command name, want at least 13", len(f))
	}
	ut, err1 := strconv.ParseUint(string(f[11]), 10, 64)
	st, err2 := strconv.ParseUint(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("stat: utime %q / stime %q are not numbers", f[11], f[12])
	}
	return time.Duration(ut+st) * time.Second / ClockTicks, nil
}

// ParseStatusRSS returns VmRSS in bytes from /proc/<pid>/status contents.
func ParseStatusRSS(b []byte) (int64, error) {
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		rest, ok := bytes.CutPrefix(line, []byte("VmRSS:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if len(f) < 1 {
			break
		}
		kb, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("status: VmRSS %q is not a number", f[0])
		}
		if len(f) > 1 && string(f[1]) != "kB" {
			return 0, fmt.Errorf("status: VmRSS unit %q, want kB", f[1])
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("status: no VmRSS line (kernel thread or exited process?)")
}

// ReadProc samples pid from /proc.
func ReadProc(pid int) (ProcSample, error) {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ProcSample{}, fmt.Errorf("process %d: %w", pid, err)
	}
	cpu, err := ParseStat(st)
	if err != nil {
		return ProcSample{}, fmt.Errorf("process %d: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ProcSample{}, fmt.Errorf("process %d: %w", pid, err)
	}
	rss, err := ParseStatusRSS(status)
	if err != nil {
		return ProcSample{}, fmt.Errorf("process %d: %w", pid, err)
	}
	return ProcSample{CPU: cpu, RSSBytes: rss}, nil
}

// ProcStats summarise a process over a run.
type ProcStats struct {
	PID        int     `json:"pid"`
	CPUSeconds float64 `json:"cpu_seconds"`
	RSSStart   int64   `json:"rss_start_bytes"`
	RSSPeak    int64   `json:"rss_peak_bytes"`
	RSSEnd     int64   `json:"rss_end_bytes"`
	RSSGrowth  int64   `json:"rss_growth_bytes"` // end - start
}

// Summarise is the pure summary of a start sample, the samples taken
// during the run and an end sample.
func Summarise(pid int, start, end ProcSample, during []ProcSample) ProcStats {
	peak := max(start.RSSBytes, end.RSSBytes)
	for _, s := range during {
		peak = max(peak, s.RSSBytes)
	}
	return ProcStats{
		PID: pid, CPUSeconds: (end.CPU - start.CPU).Seconds(),
		RSSStart: start.RSSBytes, RSSPeak: peak, RSSEnd: end.RSSBytes, RSSGrowth: end.RSSBytes - start.RSSBytes,
	}
}

// ProcWatcher samples a process every interval until Stop.
type ProcWatcher struct {
	pid    int
	start  ProcSample
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	during []ProcSample
}

// WatchProc takes the start sample and begins sampling.
func WatchProc(pid int, interval time.Duration) (*ProcWatcher, error) {
	s, err := ReadProc(pid)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &ProcWatcher{pid: pid, start: s, cancel: cancel}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if s, err := ReadProc(pid); err == nil {
					w.mu.Lock()
					w.during = append(w.during, s)
					w.mu.Unlock()
				}
			}
		}
	}()
	return w, nil
}

// Stop ends sampling, takes the end sample and summarises.
func (w *ProcWatcher) Stop() (ProcStats, error) {
	w.cancel()
	w.wg.Wait()
	end, err := ReadProc(w.pid)
	if err != nil {
		return ProcStats{}, err
	}
	return Summarise(w.pid, w.start, end, w.during), nil
}
