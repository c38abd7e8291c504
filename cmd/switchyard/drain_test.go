//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/switchyard-dev/switchyard/api"
	"github.com/switchyard-dev/switchyard/inference-backend/demomodels"
	pb "github.com/switchyard-dev/switchyard/oip/inferencepb"
	"github.com/switchyard-dev/switchyard/proxy"
)

// loggedProc is a running switchyard subcommand whose JSON log lines
// (stderr) are kept and searched.
type loggedProc struct {
	cmd  *exec.Cmd
	done chan error
	mu   sync.Mutex
	log  bytes.Buffer
	msgs []map[string]any
}

// startLogged starts bin with args and waits (bounded) for the log line
// whose msg is waitMsg; it returns that line's fields.
func startLogged(t *testing.T, bin, waitMsg string, args ...string) (*loggedProc, map[string]any) {
	t.Helper()
	p := &loggedProc{cmd: exec.Command(bin, args...), done: make(chan error, 1)}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var m map[string]any
			_ = json.Unmarshal(sc.Bytes(), &m)
			p.mu.Lock()
			p.log.Write(sc.Bytes())
			p.log.WriteByte('\n')
			if m != nil {
				p.msgs = append(p.msgs, m)
			}
			p.mu.Unlock()
		}
	}()
	go func() {
		<-scanned // all of stderr read before Wait closes the pipe
		p.done <- p.cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		select {
		case err := <-p.done:
			p.done <- err
		case <-time.After(10 * time.Second):
			t.Errorf("%s did not exit after SIGKILL", args[0])
		}
	})
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if m := p.find(waitMsg); m != nil {
			return p, m
		}
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("%s exited (%v) before logging %q:\n%s", args[0], err, waitMsg, p.stderr())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not log %q within 2 minutes:\n%s", args[0], waitMsg, p.stderr())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *loggedProc) find(msg string) map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.msgs {
		if m["msg"] == msg {
			return m
		}
	}
	return nil
}

func (p *loggedProc) stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// wait returns the process's exit (bounded).
func (p *loggedProc) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(within):
		t.Fatalf("still running %s after SIGTERM:\n%s", within, p.stderr())
		return nil
	}
}

// keptAlive opens a connection to addr and has one request answered on
// it, so it sits idle and kept alive.
func keptAlive(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(time.Minute))
	br := bufio.NewReader(c)
	io.WriteString(c, "GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 || resp.Close {
		t.Fatalf("live on a kept-alive connection: %d close=%v", resp.StatusCode, resp.Close)
	}
	return c, br
}

// refused polls until a connection to each address is refused.
func refused(t *testing.T, addrs ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, a := range addrs {
		for {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err != nil {
				break
			}
			c.Close()
			if time.Now().After(deadline) {
				t.Fatalf("%s still accepts connections while draining", a)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func inferJSON(rows int) []byte {
	data := make([]float32, rows*32)
	b, _ := json.Marshal(map[string]any{"inputs": []map[string]any{{"name": "features", "datatype": "FP32", "shape": []int{rows, 32}, "data": data}}})
	return b
}

func inferGRPC(model string, rows int) *pb.ModelInferRequest {
	return &pb.ModelInferRequest{ModelName: model, Inputs: []*pb.ModelInferRequest_InferInputTensor{{
		Name: "features", Datatype: "FP32", Shape: []int64{int64(rows), 32},
		Contents: &pb.InferTensorContents{Fp32Contents: make([]float32, rows*32)},
	}}}
}

func dialGRPC(t *testing.T, addr string) pb.GRPCInferenceServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return pb.NewGRPCInferenceServiceClient(cc)
}

// SIGTERM drains `switchyard backend`: it stops accepting on both ports,
// closes an idle kept-alive connection, finishes a REST request whose body
// is still arriving and a gRPC request waiting in the batching queue, and
// exits 0.
func TestBackendDrainsOnSIGTERM(t *testing.T) {
	bin := buildSwitchyard(t)
	repo := t.TempDir()
	// recommender-v1 alone; a batch waits up to 10s for more rows (or runs
	// when it holds 64): a gRPC request of one row stays in flight until
	// the REST request's 63 rows arrive.
	if err := os.MkdirAll(filepath.Join(repo, demomodels.V1), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := "max_batch_size: 64\ndynamic_batching:\n  max_queue_delay: 10s\nwarmup: 0\n"
	if err := os.WriteFile(filepath.Join(repo, demomodels.V1, "config.yaml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := demomodels.WriteModel(repo, demomodels.V1, "1"); err != nil {
		t.Fatal(err)
	}
	p, ready := startLogged(t, bin, "backend ready", "backend", "--model-repository", repo,
		"--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--drain-timeout", "60s")
	httpAddr, grpcAddr := fmt.Sprint(ready["http"]), fmt.Sprint(ready["grpc"])

	idle, idleBR := keptAlive(t, httpAddr)
	_ = idle
	// gRPC: one row, queued for its batch.
	gc := dialGRPC(t, grpcAddr)
	grpcDone := make(chan error, 1)
	var grpcResp *pb.ModelInferResponse
	go func() {
		var err error
		grpcResp, err = gc.ModelInfer(context.Background(), inferGRPC(demomodels.V1, 1))
		grpcDone <- err
	}()
	metrics := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	inflight := fmt.Sprintf("switchyard_backend_inflight_requests{model=%q,version=\"1\"} 1\n", demomodels.V1)
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := metrics.Get("http://" + httpAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if bytes.Contains(b, []byte(inflight)) {
			break
		}
		select {
		case err := <-grpcDone:
			t.Fatalf("the gRPC request finished (%v) before it was seen queued", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no request in flight at the backend:\n%s", b)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// REST: the head, then (100 Continue: the server reads the body) the
	// body only once the drain has begun.
	body := inferJSON(63)
	up, err := net.Dial("tcp", httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	up.SetDeadline(time.Now().Add(time.Minute))
	upBR := bufio.NewReader(up)
	fmt.Fprintf(up, "POST /v2/models/%s/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", demomodels.V1, len(body))
	if line, err := upBR.ReadString('\n'); err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("want 100 Continue, got %q %v", line, err)
	}
	if line, _ := upBR.ReadString('\n'); line != "\r\n" {
		t.Fatalf("100 Continue: then %q", line)
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := idleBR.ReadByte(); err != io.EOF {
		t.Errorf("idle kept-alive connection while draining: %v, want EOF", err)
	}
	refused(t, httpAddr, grpcAddr)
	up.Write(body)
	resp, err := http.ReadResponse(upBR, nil)
	if err != nil {
		t.Fatalf("REST request in flight at SIGTERM: %v\n%s", err, p.stderr())
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"shape":[63,100]`)) {
		t.Errorf("REST request in flight at SIGTERM: %d %s", resp.StatusCode, b)
	}
	if err := <-grpcDone; err != nil {
		t.Errorf("gRPC request in flight at SIGTERM: %v", err)
	} else if got := grpcResp.GetOutputs(); len(got) != 1 || fmt.Sprint(got[0].Shape) != "[1 100]" {
		t.Errorf("gRPC request in flight at SIGTERM: outputs %v", got)
	}
	if err := p.wait(t, time.Minute); err != nil {
		t.Errorf("backend after SIGTERM: %v, want exit 0:\n%s", err, p.stderr())
	}
	if p.find("backend stopped") == nil {
		t.Errorf("no \"backend stopped\" line:\n%s", p.stderr())
	}
}

// SIGTERM drains `switchyard proxy`: it stops accepting on all its ports,
// closes an idle kept-alive connection, finishes a REST and a gRPC request
// whose backend is still working on them, and exits 0. The backend is a
// real HTTP server on 127.0.0.1 that holds each infer request until the
// test lets it answer.
func TestProxyDrainsOnSIGTERM(t *testing.T) {
	bin := buildSwitchyard(t)
	arrived, release := make(chan struct{}, 2), make(chan struct{})
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/infer") {
			http.NotFound(w, r)
			return
		}
		io.Copy(io.Discard, r.Body)
		arrived <- struct{}{}
		<-release
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"model_name":"m","outputs":[{"name":"scores","datatype":"FP32","shape":[1,2],"data":[0.5,0.25]}]}`)
	})}
	bl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go backend.Serve(bl)
	var releaseOnce sync.Once
	t.Cleanup(func() {
		releaseOnce.Do(func() { close(release) })
		backend.Close()
	})

	// The proxy's configuration: persisted state (no control plane).
	state := t.TempDir()
	st, _ := json.Marshal(map[string]any{"version": "drain-1", "nodeId": "drain", "savedAt": time.Now().UTC(), "models": []api.Model{{
		Metadata: api.Metadata{Name: "m"},
		Spec: api.Spec{
			Versions: []api.Version{{Name: "v1", Endpoints: []string{bl.Addr().String()}}},
			Traffic:  api.Traffic{Weights: map[string]int{"v1": 100}},
			Timeout:  api.Duration(time.Minute),
		},
	}}})
	if err := os.WriteFile(filepath.Join(state, proxy.StateFile), st, 0o644); err != nil {
		t.Fatal(err)
	}
	p, serving := startLogged(t, bin, "proxy serving", "proxy", "--xds", "", "--node-id", "drain", "--state-dir", state,
		"--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--drain-timeout", "60s")
	httpAddr, grpcAddr, adminAddr := fmt.Sprint(serving["http"]), fmt.Sprint(serving["grpc"]), fmt.Sprint(serving["admin"])

	idle, idleBR := keptAlive(t, httpAddr)
	_ = idle
	restDone := make(chan error, 1)
	go func() {
		resp, err := http.Post("http://"+httpAddr+"/v2/models/m/infer", "application/json", bytes.NewReader(inferJSON(1)))
		if err != nil {
			restDone <- err
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-Switchyard-Variant") != "v1" {
			restDone <- fmt.Errorf("HTTP %d variant %q: %s", resp.StatusCode, resp.Header.Get("X-Switchyard-Variant"), b)
			return
		}
		restDone <- nil
	}()
	gc := dialGRPC(t, grpcAddr)
	grpcDone := make(chan error, 1)
	go func() {
		_, err := gc.ModelInfer(context.Background(), inferGRPC("m", 1))
		grpcDone <- err
	}()
	for range 2 {
		select {
		case <-arrived:
		case err := <-restDone:
			t.Fatalf("REST request ended before it reached the backend: %v\n%s", err, p.stderr())
		case err := <-grpcDone:
			t.Fatalf("gRPC request ended before it reached the backend: %v\n%s", err, p.stderr())
		case <-time.After(30 * time.Second):
			t.Fatalf("requests did not reach the backend:\n%s", p.stderr())
		}
	}

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := idleBR.ReadByte(); err != io.EOF {
		t.Errorf("idle kept-alive connection while draining: %v, want EOF", err)
	}
	refused(t, httpAddr, grpcAddr, adminAddr)
	releaseOnce.Do(func() { close(release) })
	if err := <-restDone; err != nil {
		t.Errorf("REST request in flight at SIGTERM: %v", err)
	}
	if err := <-grpcDone; err != nil {
		t.Errorf("gRPC request in flight at SIGTERM: %v", err)
	}
	if err := p.wait(t, time.Minute); err != nil {
		t.Errorf("proxy after SIGTERM: %v, want exit 0:\n%s", err, p.stderr())
	}
	if p.find("drained") == nil {
		t.Errorf("no \"drained\" line:\n%s", p.stderr())
	}
}
