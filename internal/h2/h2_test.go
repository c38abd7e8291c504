package h2

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/switchyard-dev/switchyard/internal/backoff"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
)

// fallbackOIP is the grpc-go server behind the lean one: its ModelInfer
// marks its answers ("fallback:" + id) so a test sees which path served.
type fallbackOIP struct {
	pb.UnimplementedGRPCInferenceServiceServer
}

func (fallbackOIP) ServerLive(context.Context, *pb.ServerLiveRequest) (*pb.ServerLiveResponse, error) {
	return &pb.ServerLiveResponse{Live: true}, nil
}

func (fallbackOIP) ModelInfer(_ context.Context, req *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	return &pb.ModelInferResponse{Id: "fallback:" + req.GetId(), RawOutputContents: req.GetRawInputContents()}, nil
}

func (fallbackOIP) ModelStreamInfer(s pb.GRPCInferenceService_ModelStreamInferServer) error {
	for {
		req, err := s.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := s.Send(&pb.ModelStreamInferResponse{InferResponse: &pb.ModelInferResponse{Id: "stream:" + req.GetId()}}); err != nil {
			return err
		}
	}
}

// fastOIP is the test FastFunc for ModelInfer: it answers by the request's
// id (see the cases), and reports the contexts of calls that ended.
type fastOIP struct {
	ended chan error
}

func (f *fastOIP) serve(ctx context.Context, c *Call) Answer {
	var req pb.ModelInferRequest
	if err := proto.Unmarshal(c.Msg, &req); err != nil {
		return Answer{Status: status.New(codes.InvalidArgument, err.Error())}
	}
	switch id := req.GetId(); {
	case id == "error":
		st, _ := status.New(codes.Unavailable, "busy: 100 % ünïcode").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Second)})
		return Answer{Status: st, Header: metadata.Pairs("x-variant", "v1"), Trailer: metadata.Pairs("x-why", "overload", "x-raw-bin", "\x00\x01")}
	case id == "error-only":
		return Answer{Status: status.New(codes.NotFound, "no such model")}
	case id == "wait":
		<-ctx.Done()
		if f.ended != nil {
			f.ended <- ctx.Err()
		}
		return Answer{Status: status.FromContextError(ctx.Err())}
	case strings.HasPrefix(id, "sleep"):
		time.Sleep(200 * time.Millisecond)
	}
	out := &pb.ModelInferResponse{Id: req.GetId(), ModelName: first(c.MD["x-echo"]), RawOutputContents: req.GetRawInputContents()}
	b, _ := proto.Marshal(out)
	return Answer{Msg: b, Header: metadata.Pairs("x-variant", "v1"), Trailer: metadata.Pairs("x-trailer", "t")}
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// start serves a lean server (ModelInfer fast, the rest on grpc-go) on a
// real socket.
func start(t testing.TB, f *fastOIP, tune func(*Server)) (*Server, string) {
	t.Helper()
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(32<<20), grpc.MaxSendMsgSize(32<<20))
	pb.RegisterGRPCInferenceServiceServer(gs, fallbackOIP{})
	s := &Server{Fallback: gs, Route: func(m string) FastFunc {
		if m == pb.GRPCInferenceService_ModelInfer_FullMethodName {
			return f.serve
		}
		return nil
	}}
	if tune != nil {
		tune(s)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	t.Cleanup(func() { s.Close(); gs.Stop() })
	return s, l.Addr().String()
}

func client(t testing.TB, addr string, opts ...grpc.DialOption) pb.GRPCInferenceServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return pb.NewGRPCInferenceServiceClient(cc)
}

func TestUnaryMetadataAndTrailers(t *testing.T) {
	_, addr := start(t, &fastOIP{}, nil)
	c := client(t, addr)
	var hdr, tr metadata.MD
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-echo", "hello")
	for i := 0; i < 3; i++ { // several calls on one connection
		out, err := c.ModelInfer(ctx, &pb.ModelInferRequest{Id: "a", RawInputContents: [][]byte{[]byte("xyz")}}, grpc.Header(&hdr), grpc.Trailer(&tr))
		if err != nil {
			t.Fatal(err)
		}
		if out.GetId() != "a" || out.GetModelName() != "hello" || string(out.GetRawOutputContents()[0]) != "xyz" {
			t.Fatalf("answer %v", out)
		}
		if first(hdr["x-variant"]) != "v1" || first(tr["x-trailer"]) != "t" {
			t.Fatalf("header %v trailer %v", hdr, tr)
		}
	}
}

func TestErrorsWithDetails(t *testing.T) {
	_, addr := start(t, &fastOIP{}, nil)
	c := client(t, addr)
	var hdr, tr metadata.MD
	_, err := c.ModelInfer(context.Background(), &pb.ModelInferRequest{Id: "error"}, grpc.Header(&hdr), grpc.Trailer(&tr))
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || st.Message() != "busy: 100 % ünïcode" {
		t.Fatalf("status %v", st)
	}
	var ri *errdetails.RetryInfo
	for _, d := range st.Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			ri = r
		}
	}
	if ri == nil || ri.GetRetryDelay().AsDuration() != time.Second {
		t.Fatalf("details %v", st.Details())
	}
	if first(hdr["x-variant"]) != "v1" || first(tr["x-why"]) != "overload" || first(tr["x-raw-bin"]) != "\x00\x01" {
		t.Fatalf("header %v trailer %v", hdr, tr)
	}
	// Trailers-only.
	_, err = c.ModelInfer(context.Background(), &pb.ModelInferRequest{Id: "error-only"})
	if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != "no such model" {
		t.Fatalf("trailers-only: %v", err)
	}
}

func TestDeadlineAndCancel(t *testing.T) {
	f := &fastOIP{ended: make(chan error, 2)}
	_, addr := start(t, f, nil)
	c := client(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.ModelInfer(ctx, &pb.ModelInferRequest{Id: "wait"})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("deadline: %v", err)
	}
	if err := <-f.ended; err == nil {
		t.Fatal("the server's context did not end")
	}
	ctx, cancel = context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.ModelInfer(ctx, &pb.ModelInferRequest{Id: "wait"})
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	cancel()
	if err := <-errc; status.Code(err) != codes.Canceled {
		t.Fatalf("cancel: %v", err)
	}
	if err := <-f.ended; !errors.Is(err, context.Canceled) {
		t.Fatalf("the server's context: %v, want canceled (RST_STREAM)", err)
	}
	// The connection still serves.
	if _, err := c.ModelInfer(context.Background(), &pb.ModelInferRequest{Id: "b"}); err != nil {
		t.Fatal(err)
	}
}

// Messages far larger than every flow-control window, both ways, with small
// windows on both sides.
func TestLargeMessagesAcrossWindows(t *testing.T) {
	_, addr := start(t, &fastOIP{}, func(s *Server) {
		s.StreamWindow, s.ConnWindow, s.MaxRecvMsgSize = 64<<10, 96<<10, 32<<20
	})
	c := client(t, addr, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(32<<20), grpc.MaxCallSendMsgSize(32<<20)))
	big := bytes.Repeat([]byte("0123456789abcdef"), 8<<20/16)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := c.ModelInfer(context.Background(), &pb.ModelInferRequest{Id: "big", RawInputContents: [][]byte{big}})
			if err != nil {
				t.Error(err)
				return
			}
			if !bytes.Equal(out.GetRawOutputContents()[0], big) {
				t.Error("the answer differs")
			}
		}()
	}
	wg.Wait()
	// Through the fallback too (the body pipe's credit).
	out, err := c.ModelInfer(context.Background(), &pb.ModelInferRequest{Id: "big", RawInputContents: [][]byte{big}}, grpc.UseCompressor(gzip.Name))
	if err != nil || !bytes.Equal(out.GetRawOutputContents()[0], big) || out.GetId() != "fallback:big" {
		t.Fatalf("fallback: %v", err)
	}
}

func TestMessageOverLimit(t *testing.T) {
	_, addr := start(t, &fastOIP{}, func(s *Server) { s.MaxRecvMsgSize = 1 << 10 })
	c := client(t, addr)
	_, err := c.ModelInfer(context.Background(), &pb.ModelInferRequest{Id: "x", RawInputContents: [][]byte{make([]byte, 64<<10)}})
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "larger than max") {
		t.Fatalf("%v", err)
	}
	if _, err := c.ModelInfer(context.Background(), &pb.ModelInferRequest{Id: "x"}); err != nil {
		t.Fatal(err)
	}
}

func TestManyConcurrentStreams(t *testing.T) {
	_, addr := start(t, &fastOIP{}, func(s *Server) { s.MaxConcurrentStreams = 16 })
	c := client(t, addr)
	var wg sync.WaitGroup
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				id := "c" + string(rune('a'+g%26))
				out, err := c.ModelInfer(context.Background(), &pb.ModelInferRequest{Id: id})
				if err != nil || out.GetId() != id {
					t.Errorf("%v %v", out, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// Other methods, streaming and compressed messages are grpc-go's.
func TestFallbackStreams(t *testing.T) {
	_, addr := start(t, &fastOIP{}, nil)
	c := client(t, addr)
	if r, err := c.ServerLive(context.Background(), &pb.ServerLiveRequest{}); err != nil || !r.GetLive() {
		t.Fatalf("live: %v %v", r, err)
	}
	out, err := c.ModelInfer(context.Background(), &pb.ModelInferRequest{Id: "z"}, grpc.UseCompressor(gzip.Name))
	if err != nil || out.GetId() != "fallback:z" {
		t.Fatalf("compressed: %v %v", out, err)
	}
	if _, err := c.ServerReady(context.Background(), &pb.ServerReadyRequest{}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("unimplemented: %v", err)
	}
	s, err := c.ModelStreamInfer(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		id := string(rune('0' + i))
		if err := s.Send(&pb.ModelInferRequest{Id: id}); err != nil {
			t.Fatal(err)
		}
		r, err := s.Recv()
		if err != nil || r.GetInferResponse().GetId() != "stream:"+id {
			t.Fatalf("stream: %v %v", r, err)
		}
	}
	s.CloseSend()
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("stream end: %v", err)
	}
}

// Shutdown: GOAWAY, the calls in flight finish, then the connection closes.
func TestShutdownLetsCallsFinish(t *testing.T) {
	s, addr := start(t, &fastOIP{}, nil)
	c := client(t, addr)
	if _, err := c.ModelInfer(context.Background(), &pb.ModelInferRequest{Id: "warm"}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, err := c.ModelInfer(context.Background(), &pb.ModelInferRequest{Id: "sleep"}); err != nil || out.GetId() != "sleep" {
				t.Errorf("in flight: %v %v", out, err)
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	ctx, cancel = context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := c.ModelInfer(ctx, &pb.ModelInferRequest{Id: "late"}); err == nil {
		t.Fatal("a call after shutdown was served")
	}
}

// rawConn is a client connection speaking frames by hand.
func rawConn(t *testing.T, addr string) (net.Conn, *http2.Framer) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(nc, http2.ClientPreface)
	fr := http2.NewFramer(nc, bufio.NewReader(nc))
	fr.WriteSettings()
	return nc, fr
}

// goAwayCode reads frames until a GOAWAY (its code) or the connection ends.
func goAwayCode(t *testing.T, fr *http2.Framer) (http2.ErrCode, bool) {
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return 0, false
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			return g.ErrCode, true
		}
	}
}

func TestMalformedFramesEndTheConnection(t *testing.T) {
	_, addr := start(t, &fastOIP{}, nil)
	hdrs := func(enc func(string, string)) []byte {
		var b bytes.Buffer
		e := hpack.NewEncoder(&b)
		for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", pb.GRPCInferenceService_ModelInfer_FullMethodName}, {":authority", "x"}, {"content-type", "application/grpc"}} {
			e.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		return b.Bytes()
	}(nil)
	cases := map[string]struct {
		send func(nc net.Conn, fr *http2.Framer)
		code http2.ErrCode
	}{
		"DATA on stream 0":       {func(_ net.Conn, fr *http2.Framer) { fr.WriteRawFrame(http2.FrameData, 0, 0, []byte("x")) }, http2.ErrCodeProtocol},
		"SETTINGS of odd length": {func(_ net.Conn, fr *http2.Framer) { fr.WriteRawFrame(http2.FrameSettings, 0, 0, []byte{1, 2, 3}) }, http2.ErrCodeFrameSize},
		"bad hpack": {func(_ net.Conn, fr *http2.Framer) {
			fr.WriteRawFrame(http2.FrameHeaders, http2.FlagHeadersEndHeaders, 1, []byte{0xff, 0xff, 0xff, 0xff})
		}, http2.ErrCodeCompression},
		"even stream id": {func(_ net.Conn, fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 2, BlockFragment: hdrs, EndHeaders: true})
		}, http2.ErrCodeProtocol},
		"CONTINUATION without HEADERS": {func(_ net.Conn, fr *http2.Framer) { fr.WriteContinuation(1, true, hdrs) }, http2.ErrCodeProtocol},
		"frame past the size limit": {func(nc net.Conn, _ *http2.Framer) {
			nc.Write([]byte{0xff, 0xff, 0xff, byte(http2.FrameData), 0, 0, 0, 0, 1})
		}, http2.ErrCodeFrameSize},
		"WINDOW_UPDATE past 2^31-1": {func(_ net.Conn, fr *http2.Framer) {
			fr.WriteWindowUpdate(0, 1<<31-1)
			fr.WriteWindowUpdate(0, 1<<31-1)
		}, http2.ErrCodeFlowControl},
		"WINDOW_UPDATE of 0": {func(_ net.Conn, fr *http2.Framer) {
			fr.WriteRawFrame(http2.FrameWindowUpdate, 0, 0, []byte{0, 0, 0, 0})
		}, http2.ErrCodeProtocol},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			nc, fr := rawConn(t, addr)
			tc.send(nc, fr)
			code, ok := goAwayCode(t, fr)
			if !ok || code != tc.code {
				t.Fatalf("GOAWAY %v (%v), want %v", code, ok, tc.code)
			}
		})
	}
	// No preface: closed.
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	io.WriteString(nc, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(nc); err != nil {
		t.Fatalf("no preface: %v", err)
	}
	// The server still serves.
	if _, err := client(t, addr).ModelInfer(context.Background(), &pb.ModelInferRequest{Id: "ok"}); err != nil {
		t.Fatal(err)
	}
}

// FuzzFrames: whatever a client sends after the preface, the connection
// handler neither panics nor hangs.
func FuzzFrames(f *testing.F) {
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	var hb bytes.Buffer
	e := hpack.NewEncoder(&hb)
	for _, h := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", pb.GRPCInferenceService_ModelInfer_FullMethodName}, {"content-type", "application/grpc"}, {"grpc-timeout", "1S"}} {
		e.WriteField(hpack.HeaderField{Name: h[0], Value: h[1]})
	}
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	msg, _ := proto.Marshal(&pb.ModelInferRequest{Id: "f"})
	fr.WriteData(1, true, append([]byte{0, 0, 0, 0, byte(len(msg))}, msg...))
	fr.WritePing(false, [8]byte{1})
	fr.WriteWindowUpdate(0, 100)
	fr.WriteRSTStream(3, http2.ErrCodeCancel)
	f.Add(b.Bytes())
	f.Add([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0})
	fast := &fastOIP{}
	f.Fuzz(func(t *testing.T, in []byte) {
		s := &Server{Route: func(string) FastFunc { return fast.serve }, HeadTimeout: time.Second, WriteTimeout: time.Second}
		s.conns = map[*conn]struct{}{}
		s.work = make(chan *stream)
		a, z := net.Pipe()
		c := s.newConn(a)
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		go c.serve()
		go io.Copy(io.Discard, z)
		z.SetDeadline(time.Now().Add(2 * time.Second))
		z.Write([]byte(http2.ClientPreface))
		z.Write([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0})
		z.Write(in)
		z.Close()
		s.wg.Wait()
	})
}

// plainGRPC serves fallbackOIP on grpc-go's own server (a real backend
// for the client tests).
func plainGRPC(t testing.TB, opts ...grpc.ServerOption) (*grpc.Server, string) {
	t.Helper()
	gs := grpc.NewServer(opts...)
	pb.RegisterGRPCInferenceServiceServer(gs, fallbackOIP{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(l)
	t.Cleanup(gs.Stop)
	return gs, l.Addr().String()
}

func invoke(t testing.TB, c *Client, ctx context.Context, req *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	t.Helper()
	b, _ := proto.Marshal(req)
	out, err := c.Invoke(ctx, pb.GRPCInferenceService_ModelInfer_FullMethodName, b)
	if err != nil {
		return nil, err
	}
	var resp pb.ModelInferResponse
	if err := proto.Unmarshal(out, &resp); err != nil {
		t.Fatal(err)
	}
	return &resp, nil
}

// The lean client against grpc-go's server and against the lean server:
// answers, statuses with details, metadata out, large messages both ways,
// many calls at once on one connection.
func TestClient(t *testing.T) {
	_, gaddr := plainGRPC(t, grpc.MaxRecvMsgSize(32<<20), grpc.MaxSendMsgSize(32<<20))
	_, laddr := start(t, &fastOIP{}, func(s *Server) { s.MaxRecvMsgSize = 32 << 20 })
	for name, addr := range map[string]string{"grpc-go": gaddr, "lean": laddr} {
		t.Run(name, func(t *testing.T) {
			c := &Client{Addr: addr, MaxRecvMsgSize: 32 << 20, StreamWindow: 64 << 10, ConnWindow: 128 << 10}
			defer c.Close()
			ctx := metadata.AppendToOutgoingContext(context.Background(), "x-echo", "hi")
			out, err := invoke(t, c, ctx, &pb.ModelInferRequest{Id: "a"})
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"grpc-go": "fallback:a", "lean": "a"}[name]
			if out.GetId() != want {
				t.Fatalf("answer %v", out)
			}
			if name == "lean" {
				if out.GetModelName() != "hi" {
					t.Fatalf("metadata not received: %v", out)
				}
				_, err := invoke(t, c, context.Background(), &pb.ModelInferRequest{Id: "error"})
				st := status.Convert(err)
				if st.Code() != codes.Unavailable || st.Message() != "busy: 100 % ünïcode" || len(st.Details()) != 1 {
					t.Fatalf("status %v %v", st, st.Details())
				}
			}
			big := bytes.Repeat([]byte("abcdefgh"), 8<<20/8)
			var wg sync.WaitGroup
			for i := 0; i < 3; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					out, err := invoke(t, c, context.Background(), &pb.ModelInferRequest{Id: "big", RawInputContents: [][]byte{big}})
					if err != nil || !bytes.Equal(out.GetRawOutputContents()[0], big) {
						t.Errorf("big: %v", err)
					}
				}()
			}
			for i := 0; i < 200; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := invoke(t, c, context.Background(), &pb.ModelInferRequest{Id: "m"}); err != nil {
						t.Errorf("many: %v", err)
					}
				}()
			}
			wg.Wait()
		})
	}
}

func TestClientDeadlineCancelAndFailures(t *testing.T) {
	f := &fastOIP{ended: make(chan error, 4)}
	s, addr := start(t, f, nil)
	c := &Client{Addr: addr}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := invoke(t, c, ctx, &pb.ModelInferRequest{Id: "wait"}); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("deadline: %v", err)
	}
	<-f.ended // the server saw it end (grpc-timeout, or our RST_STREAM)
	ctx, cancel = context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	if _, err := invoke(t, c, ctx, &pb.ModelInferRequest{Id: "wait"}); status.Code(err) != codes.Canceled {
		t.Fatalf("cancel: %v", err)
	}
	if err := <-f.ended; !errors.Is(err, context.Canceled) {
		t.Fatalf("the server's context: %v", err)
	}
	// Shutdown: the call in flight finishes; later ones get UNAVAILABLE.
	errc := make(chan error, 1)
	go func() {
		_, err := invoke(t, c, context.Background(), &pb.ModelInferRequest{Id: "sleep"})
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("in flight across GOAWAY: %v", err)
	}
	if _, err := invoke(t, c, context.Background(), &pb.ModelInferRequest{Id: "x"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("after shutdown: %v", err)
	}
	// Nothing listening: UNAVAILABLE.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String()
	l.Close()
	c2 := &Client{Addr: dead}
	if _, err := invoke(t, c2, context.Background(), &pb.ModelInferRequest{Id: "x"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("refused: %v", err)
	}
	// A server that dies mid-call: UNAVAILABLE.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		fr := http2.NewFramer(nc, nc)
		io.ReadFull(nc, make([]byte, len(http2.ClientPreface)))
		fr.WriteSettings()
		fr.ReadFrame()
		time.Sleep(50 * time.Millisecond)
		nc.Close()
	}()
	c3 := &Client{Addr: ln.Addr().String()}
	if _, err := invoke(t, c3, context.Background(), &pb.ModelInferRequest{Id: "x"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("connection dropped: %v", err)
	}
}

// Streams opened and reset at once (the "rapid reset" pattern): the
// connection is not torn down, the server keeps serving.
func TestRapidReset(t *testing.T) {
	_, addr := start(t, &fastOIP{}, func(s *Server) { s.MaxConcurrentStreams = 8 })
	nc, fr := rawConn(t, addr)
	var hb bytes.Buffer
	e := hpack.NewEncoder(&hb)
	for _, h := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", pb.GRPCInferenceService_ModelStreamInfer_FullMethodName}, {":authority", "x"}, {"content-type", "application/grpc"}} {
		e.WriteField(hpack.HeaderField{Name: h[0], Value: h[1]})
	}
	for i := uint32(0); i < 500; i++ {
		id := 2*i + 1
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true})
		fr.WriteRSTStream(id, http2.ErrCodeCancel)
	}
	fr.WritePing(false, [8]byte{7})
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("the connection ended: %v", err)
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			t.Fatalf("GOAWAY %v", g.ErrCode)
		}
		if p, ok := f.(*http2.PingFrame); ok && p.IsAck() && p.Data == [8]byte{7} {
			break
		}
	}
	nc.Close()
	if _, err := client(t, addr).ModelInfer(context.Background(), &pb.ModelInferRequest{Id: "ok"}); err != nil {
		t.Fatal(err)
	}
}

// FuzzClientFrames: whatever a server answers after its SETTINGS, a call
// returns (an answer or an error) and nothing panics.
func FuzzClientFrames(f *testing.F) {
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	var hb bytes.Buffer
	e := hpack.NewEncoder(&hb)
	e.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	e.WriteField(hpack.HeaderField{Name: "content-type", Value: "application/grpc"})
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true})
	fr.WriteData(1, false, []byte{0, 0, 0, 0, 2, 8, 1})
	hb.Reset()
	e.WriteField(hpack.HeaderField{Name: "grpc-status", Value: "0"})
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true, EndStream: true})
	f.Add(b.Bytes())
	f.Add([]byte{0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	var answer []byte
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			in := answer
			mu.Unlock()
			go func() {
				defer nc.Close()
				nc.SetDeadline(time.Now().Add(2 * time.Second))
				go io.Copy(io.Discard, nc)
				sfr := http2.NewFramer(nc, nil)
				sfr.WriteSettings()
				nc.Write(in)
				time.Sleep(20 * time.Millisecond)
			}()
		}
	}()
	f.Fuzz(func(t *testing.T, in []byte) {
		mu.Lock()
		answer = in
		mu.Unlock()
		c := &Client{Addr: ln.Addr().String()}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		c.Invoke(ctx, "/x/y", []byte("req"))
		if ctx.Err() != nil {
			t.Fatal("the call outlived the connection")
		}
	})
}

// TestClientDialIsSharedAndBoundedByEachCaller: the calls that need a
// connection wait for one dial, each until its own deadline: a peer that
// accepts TCP but never answers the preface holds nobody past it (the dial
// itself goes on, bounded by DialTimeout).
func TestClientDialIsSharedAndBoundedByEachCaller(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0") // never accepted: the kernel completes TCP, nobody speaks HTTP/2
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c := &Client{Addr: ln.Addr().String(), DialTimeout: time.Minute}
	defer c.Close()
	var wg sync.WaitGroup
	codesGot := make([]codes.Code, 3)
	for i := range codesGot {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			_, err := c.Invoke(ctx, "/inference.GRPCInferenceService/ModelInfer", nil)
			codesGot[i] = status.Code(err)
		}()
	}
	wg.Wait()
	for i, code := range codesGot {
		if code != codes.DeadlineExceeded {
			t.Errorf("caller %d: %v, want DEADLINE_EXCEEDED at its own deadline", i, code)
		}
	}
	c.mu.Lock()
	dialing := c.dialing != nil
	c.mu.Unlock()
	if !dialing {
		t.Error("the callers did not wait on one dial still in progress")
	}
}

// TestClientFailsFastAfterAFailedDial: after a dial fails, calls until the
// next dial (Client.Redial) fail at once with UNAVAILABLE naming the
// failure, without dialling.
func TestClientFailsFastAfterAFailedDial(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	accepted := 0
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted++
			mu.Unlock()
			nc.Close() // no SETTINGS: the dial fails
		}
	}()
	c := &Client{Addr: ln.Addr().String(), Redial: backoff.Backoff{Initial: time.Hour, Max: time.Hour}}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 3 {
		_, err := c.Invoke(ctx, "/inference.GRPCInferenceService/ModelInfer", nil)
		if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "connection error") {
			t.Fatalf("call %d: %v %q, want UNAVAILABLE naming the connection error", i, st.Code(), st.Message())
		}
	}
	mu.Lock()
	n := accepted
	mu.Unlock()
	if n != 1 {
		t.Fatalf("%d dials for 3 calls, want 1 (the rest failed fast until the redial)", n)
	}
}

// TestAnswerNotHeldBehindAWriterWaitingForWindow: an answer written while
// another answer waits for flow-control window goes out; the waiting
// writer is counted among the writers but cannot flush for the others.
// (Found as a hang of TestClient on busy CPUs: the bytes held back were
// what the peer had to see before it opened the window again.) The client
// here never opens a window: the big answer waits for good.
func TestAnswerNotHeldBehindAWriterWaitingForWindow(t *testing.T) {
	_, addr := start(t, &fastOIP{}, nil)
	_, fr := rawConn(t, addr)
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	send := func(id uint32, req *pb.ModelInferRequest) {
		hbuf.Reset()
		for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/inference.GRPCInferenceService/ModelInfer"},
			{":authority", addr}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
		b, _ := proto.Marshal(req)
		msg := append([]byte{0, byte(len(b) >> 24), byte(len(b) >> 16), byte(len(b) >> 8), byte(len(b))}, b...)
		for len(msg) > 0 {
			n := min(len(msg), 16384) // the default largest frame
			if err := fr.WriteData(id, n == len(msg), msg[:n]); err != nil {
				t.Fatal(err)
			}
			msg = msg[n:]
		}
	}
	// Stream 1: an answer of 100 KB against the default 65,535-byte windows.
	send(1, &pb.ModelInferRequest{Id: "big", RawInputContents: [][]byte{bytes.Repeat([]byte("x"), 100<<10)}})
	got := 0
	for got < 65535 {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the big answer: %v", err)
		}
		if d, ok := f.(*http2.DataFrame); ok && d.StreamID == 1 {
			got += len(d.Data())
		}
	}
	// Its writer now waits for a window. Stream 3's answer is trailers
	// only (no DATA: it needs no window) and must arrive.
	send(3, &pb.ModelInferRequest{Id: "error-only"})
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("the second answer never came (held behind the waiting writer): %v", err)
		}
		if h, ok := f.(*http2.HeadersFrame); ok && h.StreamID == 3 && h.StreamEnded() {
			return
		}
	}
}
