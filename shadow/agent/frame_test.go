package agent

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func sampleJobs() []Job {
	start := time.Unix(1700000000, 123456789)
	return []Job{
		{Model: "recommender", PrimaryVersion: "v1", TargetVersion: "v2", Start: start, Latency: 1500 * time.Microsecond,
			Request: []byte(`{"inputs":[]}` + "\x00\x01"), RequestHeaderLen: 13, Response: []byte(`{"outputs":[]}`), RespStatus: 200, RespHeaderLen: 14},
		{Model: "m", PrimaryVersion: "v1", TargetVersion: "v1", Noise: true, GRPC: true, Start: start, Request: []byte{1, 2, 3},
			RespProto: true, Response: []byte{4, 5}, RespStatus: 200},
		{Model: "m", PrimaryVersion: "v1", TargetVersion: "v3", Start: start, Request: []byte("{}"),
			PrimaryErr: "upstream timed out", PrimaryCode: 4},
		{Model: "m", PrimaryVersion: "v1", TargetVersion: "v3", Start: start, Request: []byte("{}"),
			PrimaryErr: "output has NaN/Inf: scores", PrimaryCode: 0, PrimaryNaN: true},
		{Model: "m", PrimaryVersion: "v1", TargetVersion: "v3", Start: start, Request: []byte("{}"),
			Response: []byte(`{"error":"bad"}`), RespStatus: 503},
	}
}

// TestAgentFrameRoundTrip: every frame type decodes to what was encoded,
// also when several frames share one buffer.
func TestAgentFrameRoundTrip(t *testing.T) {
	var buf []byte
	jobs := sampleJobs()
	for i := range jobs {
		buf = appendJobFrame(buf, &jobs[i])
	}
	buf = appendFrame(buf, frameConfig, []byte(`{"version":"1"}`))
	buf = appendCallFrame(buf, 7, callReport, []byte(`{"model":"m"}`))
	buf = appendReplyFrame(buf, 7, false, []byte("model \"m\" has no shadow"))
	evs := []event{{Model: "m", Version: "v2", Compared: 10, Disagreed: 3}, {Model: "n", Version: "v9", Compared: 1}}
	buf = appendEventsFrame(buf, evs)

	var gotJobs []Job
	var types []byte
	for rest := buf; len(rest) > 0; {
		typ, body, n, err := parseFrame(rest)
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, typ)
		switch typ {
		case frameJob:
			var j Job
			if err := decodeJob(body, &j); err != nil {
				t.Fatal(err)
			}
			gotJobs = append(gotJobs, j)
		case frameConfig:
			if string(body) != `{"version":"1"}` {
				t.Fatalf("config %q", body)
			}
		case frameCall:
			id, kind, args, err := decodeCall(body)
			if err != nil || id != 7 || kind != callReport || string(args) != `{"model":"m"}` {
				t.Fatalf("call %d %d %q %v", id, kind, args, err)
			}
		case frameReply:
			id, ok, out, err := decodeReply(body)
			if err != nil || id != 7 || ok || !strings.Contains(string(out), "no shadow") {
				t.Fatalf("reply %d %v %q %v", id, ok, out, err)
			}
		case frameEvents:
			got, err := decodeEvents(body)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(evs, got); d != "" {
				t.Fatalf("events (-want +got):\n%s", d)
			}
		}
		rest = rest[n:]
	}
	if want := []byte{3, 3, 3, 3, 3, frameConfig, frameCall, frameReply, frameEvents}; !bytes.Equal(types, want) {
		t.Fatalf("frame types %v, want %v", types, want)
	}
	if d := cmp.Diff(jobs, gotJobs, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); d != "" {
		t.Fatalf("jobs (-want +got):\n%s", d)
	}
}

// TestAgentFrameErrors: corrupt input from the peer is an error naming the
// problem, never a panic; an incomplete frame asks for more bytes.
func TestAgentFrameErrors(t *testing.T) {
	job := sampleJobs()[0]
	good := appendJobFrame(nil, &job)
	_, goodBody, _, _ := parseFrame(good)
	withSize := func(size uint32, rest ...byte) []byte {
		return append(binary.LittleEndian.AppendUint32(nil, size), rest...)
	}
	frames := map[string]struct {
		in   []byte
		want string
	}{
		"empty":          {nil, "incomplete"},
		"short header":   {[]byte{1, 0}, "incomplete"},
		"short body":     {good[:len(good)-1], "incomplete"},
		"zero size":      {withSize(0), "empty frame"},
		"too big":        {withSize(maxAgentFrame + 1), "more than the limit"},
		"unknown type":   {withSize(1, 99), "unknown type 99"},
		"type zero":      {withSize(1, 0), "unknown type 0"},
		"trailing bytes": {appendFrame(nil, frameJob, append(bytes.Clone(goodBody), 0)), "bytes after the last field"},
	}
	for name, tc := range frames {
		t.Run(name, func(t *testing.T) {
			typ, body, _, err := parseFrame(tc.in)
			if err == nil && typ == frameJob {
				var j Job
				err = decodeJob(body, &j)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	bodies := map[string]struct {
		body []byte
		want string
	}{
		"no flags":        {nil, "missing flags"},
		"unknown flags":   {[]byte{0x80}, "unknown job flags"},
		"cut model":       {[]byte{0, 10, 'a'}, "model cut short"},
		"bad varint":      {[]byte{0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, "bad model length"},
		"huge length":     {append([]byte{0}, binary.AppendUvarint(nil, 1<<40)...), "out of range"},
		"no versions":     {[]byte{0, 1, 'm', 0, 0, 0, 0, 0, 0, 200, 1, 0, 0}, "without model or versions"},
		"header past end": {append([]byte{0, 1, 'm', 1, 'a', 1, 'b', 0, 0, 1, 'x'}, 5), "out of range"},
	}
	for name, tc := range bodies {
		t.Run("job "+name, func(t *testing.T) {
			var j Job
			err := decodeJob(tc.body, &j)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	// Every truncation of a valid body is an error.
	for n := range len(goodBody) {
		var j Job
		if err := decodeJob(goodBody[:n], &j); err == nil {
			t.Fatalf("body cut at %d of %d decoded", n, len(goodBody))
		}
	}
	if _, _, _, err := decodeCall([]byte{1, 9, 0}); err == nil || !strings.Contains(err.Error(), "unknown call kind 9") {
		t.Fatalf("call: %v", err)
	}
	if _, _, _, err := decodeReply([]byte{1, 2, 0}); err == nil || !strings.Contains(err.Error(), "bad reply status") {
		t.Fatalf("reply: %v", err)
	}
	if _, err := decodeEvents([]byte{1, 1, 'm', 1, 'v', 1, 2}); err == nil || !strings.Contains(err.Error(), "disagreed 2 out of range") {
		t.Fatalf("events: %v", err)
	}
}

// TestReadFrames: frames split across reads at every position arrive whole;
// a stream ending inside a frame is an error; a corrupt frame stops it.
func TestReadFrames(t *testing.T) {
	var buf []byte
	jobs := sampleJobs()
	for i := range jobs {
		buf = appendJobFrame(buf, &jobs[i])
	}
	for _, chunk := range []int{1, 3, 7, 64, len(buf)} {
		n := 0
		err := readFrames(&chunkReader{b: buf, n: chunk}, func(typ byte, body []byte) error {
			var j Job
			if err := decodeJob(body, &j); err != nil {
				return err
			}
			if j.Model != jobs[n].Model || !bytes.Equal(j.Request, jobs[n].Request) {
				t.Fatalf("chunk %d: job %d: %+v", chunk, n, j)
			}
			n++
			return nil
		})
		if err != nil || n != len(jobs) {
			t.Fatalf("chunk %d: %d frames, err %v", chunk, n, err)
		}
	}
	err := readFrames(bytes.NewReader(buf[:len(buf)-2]), func(byte, []byte) error { return nil })
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("cut stream: %v", err)
	}
	err = readFrames(bytes.NewReader([]byte{1, 0, 0, 0, 42}), func(byte, []byte) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "unknown type 42") {
		t.Fatalf("corrupt stream: %v", err)
	}
	// A frame bigger than the reader's first buffer.
	big := Job{Model: "m", PrimaryVersion: "a", TargetVersion: "b", Request: bytes.Repeat([]byte("x"), 1<<20), Start: time.Unix(0, 0)}
	got := 0
	if err := readFrames(bytes.NewReader(appendJobFrame(nil, &big)), func(_ byte, body []byte) error {
		var j Job
		got = len(body)
		return decodeJob(body, &j)
	}); err != nil || got < 1<<20 {
		t.Fatalf("big frame: %d bytes, %v", got, err)
	}
}

type chunkReader struct {
	b []byte
	n int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.n)], r.b)
	r.b = r.b[n:]
	return n, nil
}

// FuzzAgentFrame: no input makes the frame decoders panic, and what decodes
// encodes back to the same job.
func FuzzAgentFrame(f *testing.F) {
	jobs := sampleJobs()
	for i := range jobs {
		f.Add(appendJobFrame(nil, &jobs[i]))
	}
	f.Add(appendCallFrame(nil, 1, callMetrics, nil))
	f.Add(appendEventsFrame(nil, []event{{Model: "m", Version: "v", Compared: 2, Disagreed: 1}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, body, _, err := parseFrame(b)
		if err != nil {
			return
		}
		switch typ {
		case frameJob:
			var j Job
			if decodeJob(body, &j) != nil {
				return
			}
			var again Job
			_, body2, _, err := parseFrame(appendJobFrame(nil, &j))
			if err != nil || decodeJob(body2, &again) != nil {
				t.Fatalf("re-encoded job does not decode: %v", err)
			}
		case frameCall:
			decodeCall(body)
		case frameReply:
			decodeReply(body)
		case frameEvents:
			decodeEvents(body)
		}
	})
}
