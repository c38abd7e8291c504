package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// The frame codec (the protocol itself is described in doc.go). Pure:
// values in, bytes out; bytes in, values (or an error naming the problem)
// out.
//
//	frame   = length:uint32le type:byte body      (length counts type+body)
//	string  = uvarint length, bytes
//	job     = flags:byte model primary target start:varint(unix ns)
//	          latency:uvarint(ns) request:string reqHeaderLen:uvarint
//	          [primary error: code:uvarint message:string]
//	          [primary answer: status:uvarint headerLen:uvarint body:string]
//	call    = id:uvarint kind:byte args:string      (proxy → agent)
//	reply   = id:uvarint ok:byte body:string        (agent → proxy; !ok: body is the error)
//	events  = count:uvarint {model version compared:uvarint disagreed:uvarint}
//	init, config = JSON
//
// A frame is at most maxAgentFrame bytes; the reader rejects bigger ones
// before allocating.

// Frame types.
const (
	frameInit   byte = 1 // proxy → agent: Init (JSON), first frame on a connection
	frameConfig byte = 2 // proxy → agent: config (JSON): the models that shadow
	frameJob    byte = 3 // proxy → agent: one mirrored request
	frameCall   byte = 4 // proxy → agent: a question (report, records, metrics)
	frameReply  byte = 5 // agent → proxy: the answer to a call
	frameEvents byte = 6 // agent → proxy: comparison counts for the canary gate
)

// Call kinds.
const (
	callReport  byte = 1 // args: query JSON; reply: the engine's report (JSON)
	callRecords byte = 2 // args: query JSON; reply: the engine's records (JSON)
	callMetrics byte = 3 // no args; reply: the agent's shadow metric families (length-delimited protobuf)
	callStatus  byte = 4 // args: model (none: a liveness check, reply {}); reply: the engine's status (JSON)
)

// maxAgentFrame bounds one frame (a mirrored request and answer, or a
// reply with records).
const maxAgentFrame = 64 << 20

const frameHeader = 5

// Job flags.
const (
	jobNoise      byte = 1 << iota // also compare the primary with itself (noise floor)
	jobGRPC                        // request is a protobuf ModelInferRequest; else an OIP REST body
	jobPrimaryErr                  // the primary failed: error code and message follow
	jobPrimaryNaN                  // the primary's error is a NaN/Inf output
	jobRespProto                   // the primary's answer is a protobuf ModelInferResponse
	jobAllFlags   = jobNoise | jobGRPC | jobPrimaryErr | jobPrimaryNaN | jobRespProto
)

// Job is a mirrored request as it crosses the socket. Decoded, its
// byte slices alias the frame.
type Job struct {
	Model, PrimaryVersion, TargetVersion string
	Noise                                bool
	Start                                time.Time
	Latency                              time.Duration
	GRPC                                 bool
	Request                              []byte
	RequestHeaderLen                     int
	// PrimaryErr is the primary's error message ("" with no error),
	// PrimaryCode its oip.Code, PrimaryNaN whether it names a NaN output.
	PrimaryErr    string
	PrimaryCode   int
	PrimaryNaN    bool
	RespProto     bool
	Response      []byte
	RespStatus    int
	RespHeaderLen int
}

var errShortFrame = errors.New("shadow agent frame: incomplete")

// appendFrameHeader starts a frame of type typ at the end of dst; finish
// it with finishFrame(dst, start).
func appendFrameHeader(dst []byte, typ byte) ([]byte, int) {
	start := len(dst)
	return append(dst, 0, 0, 0, 0, typ), start
}

func finishFrame(b []byte, start int) []byte {
	binary.LittleEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	return b
}

// appendFrame appends a whole frame with body.
func appendFrame(dst []byte, typ byte, body []byte) []byte {
	dst, start := appendFrameHeader(dst, typ)
	return finishFrame(append(dst, body...), start)
}

// parseFrame reads one frame from the front of b: its type, its body (an
// alias of b) and the bytes used. errShortFrame means more bytes are
// needed; any other error means the stream is corrupt.
func parseFrame(b []byte) (typ byte, body []byte, n int, err error) {
	if len(b) < 4 {
		return 0, nil, 0, errShortFrame
	}
	size := binary.LittleEndian.Uint32(b)
	if size == 0 {
		return 0, nil, 0, errors.New("shadow agent frame: empty frame")
	}
	if size > maxAgentFrame {
		return 0, nil, 0, fmt.Errorf("shadow agent frame: %d bytes, more than the limit %d", size, maxAgentFrame)
	}
	if uint64(len(b)-4) < uint64(size) {
		return 0, nil, 0, errShortFrame
	}
	typ = b[4]
	if typ < frameInit || typ > frameEvents {
		return 0, nil, 0, fmt.Errorf("shadow agent frame: unknown type %d", typ)
	}
	return typ, b[frameHeader : 4+size], int(4 + size), nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

// appendJobFrame appends j as a job frame.
func appendJobFrame(dst []byte, j *Job) []byte {
	dst, start := appendFrameHeader(dst, frameJob)
	var flags byte
	if j.Noise {
		flags |= jobNoise
	}
	if j.GRPC {
		flags |= jobGRPC
	}
	if j.PrimaryErr != "" {
		flags |= jobPrimaryErr
		if j.PrimaryNaN {
			flags |= jobPrimaryNaN
		}
	} else if j.RespProto {
		flags |= jobRespProto
	}
	dst = append(dst, flags)
	dst = appendString(dst, j.Model)
	dst = appendString(dst, j.PrimaryVersion)
	dst = appendString(dst, j.TargetVersion)
	dst = binary.AppendVarint(dst, j.Start.UnixNano())
	dst = binary.AppendUvarint(dst, uint64(max(j.Latency, 0)))
	dst = appendBytes(dst, j.Request)
	dst = binary.AppendUvarint(dst, uint64(max(j.RequestHeaderLen, 0)))
	if j.PrimaryErr != "" {
		dst = binary.AppendUvarint(dst, uint64(max(j.PrimaryCode, 0)))
		dst = appendString(dst, j.PrimaryErr)
	} else {
		dst = binary.AppendUvarint(dst, uint64(max(j.RespStatus, 0)))
		dst = binary.AppendUvarint(dst, uint64(max(j.RespHeaderLen, 0)))
		dst = appendBytes(dst, j.Response)
	}
	return finishFrame(dst, start)
}

// wireReader reads the fields of a frame body; the first problem sticks.
type wireReader struct {
	b   []byte
	err error
}

func (r *wireReader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("shadow agent frame: %s", what)
	}
}

func (r *wireReader) byte(what string) byte {
	if r.err != nil || len(r.b) < 1 {
		r.fail("missing " + what)
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *wireReader) uvarint(what string, limit uint64) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad " + what)
		return 0
	}
	if v > limit {
		r.fail(fmt.Sprintf("%s %d out of range", what, v))
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *wireReader) varint(what string) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("bad " + what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *wireReader) bytes(what string) []byte {
	n := r.uvarint(what+" length", maxAgentFrame)
	if r.err != nil {
		return nil
	}
	if uint64(len(r.b)) < n {
		r.fail(what + " cut short")
		return nil
	}
	p := r.b[:n:n]
	r.b = r.b[n:]
	return p
}

func (r *wireReader) string(what string) string { return string(r.bytes(what)) }

func (r *wireReader) end() error {
	if r.err == nil && len(r.b) != 0 {
		r.fail(fmt.Sprintf("%d bytes after the last field", len(r.b)))
	}
	return r.err
}

// decodeJob decodes a job frame's body into j; its byte slices alias body.
func decodeJob(body []byte, j *Job) error {
	r := wireReader{b: body}
	flags := r.byte("flags")
	if flags&^jobAllFlags != 0 {
		r.fail(fmt.Sprintf("unknown job flags %#x", flags))
	}
	*j = Job{Noise: flags&jobNoise != 0, GRPC: flags&jobGRPC != 0}
	j.Model = r.string("model")
	j.PrimaryVersion = r.string("primary version")
	j.TargetVersion = r.string("target version")
	j.Start = time.Unix(0, r.varint("start"))
	j.Latency = time.Duration(r.uvarint("latency", 1<<62))
	j.Request = r.bytes("request")
	j.RequestHeaderLen = int(r.uvarint("request header length", uint64(len(j.Request))))
	if flags&jobPrimaryErr != 0 {
		j.PrimaryCode = int(r.uvarint("primary error code", 255))
		j.PrimaryErr = r.string("primary error")
		j.PrimaryNaN = flags&jobPrimaryNaN != 0
		if r.err == nil && j.PrimaryErr == "" {
			r.fail("empty primary error")
		}
	} else {
		j.RespProto = flags&jobRespProto != 0
		j.RespStatus = int(r.uvarint("primary status", 999))
		j.RespHeaderLen = int(r.uvarint("primary header length", maxAgentFrame))
		j.Response = r.bytes("primary answer")
		if r.err == nil && j.RespHeaderLen > len(j.Response) {
			r.fail("primary header length beyond the answer")
		}
	}
	if r.err == nil && (j.Model == "" || j.TargetVersion == "" || j.PrimaryVersion == "") {
		r.fail("job without model or versions")
	}
	return r.end()
}

// appendCallFrame appends a call (proxy → agent).
func appendCallFrame(dst []byte, id uint64, kind byte, args []byte) []byte {
	dst, start := appendFrameHeader(dst, frameCall)
	dst = binary.AppendUvarint(dst, id)
	dst = append(dst, kind)
	dst = appendBytes(dst, args)
	return finishFrame(dst, start)
}

func decodeCall(body []byte) (id uint64, kind byte, args []byte, err error) {
	r := wireReader{b: body}
	id = r.uvarint("call id", 1<<63)
	kind = r.byte("call kind")
	if r.err == nil && (kind < callReport || kind > callStatus) {
		r.fail(fmt.Sprintf("unknown call kind %d", kind))
	}
	args = r.bytes("call arguments")
	return id, kind, args, r.end()
}

// appendReplyFrame appends the answer to call id: body when ok, else the
// error message.
func appendReplyFrame(dst []byte, id uint64, ok bool, body []byte) []byte {
	dst, start := appendFrameHeader(dst, frameReply)
	dst = binary.AppendUvarint(dst, id)
	var o byte
	if ok {
		o = 1
	}
	dst = append(dst, o)
	dst = appendBytes(dst, body)
	return finishFrame(dst, start)
}

func decodeReply(body []byte) (id uint64, ok bool, out []byte, err error) {
	r := wireReader{b: body}
	id = r.uvarint("reply id", 1<<63)
	o := r.byte("reply status")
	if r.err == nil && o > 1 {
		r.fail(fmt.Sprintf("bad reply status %d", o))
	}
	out = r.bytes("reply body")
	return id, o == 1, out, r.end()
}

// event counts comparisons of one (model, shadow version) for the
// canary's shadow-disagreement gate.
type event struct {
	Model, Version      string
	Compared, Disagreed uint64
}

func appendEventsFrame(dst []byte, evs []event) []byte {
	dst, start := appendFrameHeader(dst, frameEvents)
	dst = binary.AppendUvarint(dst, uint64(len(evs)))
	for _, e := range evs {
		dst = appendString(dst, e.Model)
		dst = appendString(dst, e.Version)
		dst = binary.AppendUvarint(dst, e.Compared)
		dst = binary.AppendUvarint(dst, e.Disagreed)
	}
	return finishFrame(dst, start)
}

func decodeEvents(body []byte) ([]event, error) {
	r := wireReader{b: body}
	n := r.uvarint("event count", uint64(len(body)))
	var out []event
	for i := uint64(0); i < n && r.err == nil; i++ {
		e := event{Model: r.string("event model"), Version: r.string("event version")}
		e.Compared = r.uvarint("compared", 1<<62)
		e.Disagreed = r.uvarint("disagreed", e.Compared)
		out = append(out, e)
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return out, nil
}

// readFrames reads frames from r and hands each to fn (its body is valid
// only during the call) until r ends or fn or the stream fails. A clean
// end between frames is a nil error.
func readFrames(r io.Reader, fn func(typ byte, body []byte) error) error {
	buf := make([]byte, 256<<10)
	start, end := 0, 0
	for {
		n, rerr := r.Read(buf[end:])
		end += n
		for {
			typ, body, used, err := parseFrame(buf[start:end])
			if errors.Is(err, errShortFrame) {
				break
			}
			if err != nil {
				return err
			}
			if err := fn(typ, body); err != nil {
				return err
			}
			start += used
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				if start == end {
					return nil
				}
				return io.ErrUnexpectedEOF
			}
			return rerr
		}
		// Keep the start of an incomplete frame at the front, in a buffer
		// big enough for the whole frame.
		end = copy(buf, buf[start:end])
		start = 0
		if end >= 4 {
			if need := 4 + int(binary.LittleEndian.Uint32(buf)); need > len(buf) {
				nb := make([]byte, need)
				copy(nb, buf[:end])
				buf = nb
			}
		}
	}
}
