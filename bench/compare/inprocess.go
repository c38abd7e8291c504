package compare

import (
	"context"
	"runtime"

	"github.com/switchyard-dev/switchyard/inference-backend/backend"
	"github.com/switchyard-dev/switchyard/oip"
)

// inProcess runs the model in this process through ONNX Runtime, no
// protocol at all: the floor the protocol pieces are compared with.
type inProcess struct {
	sess   *backend.Session
	inputs [][]oip.Tensor
}

func newInProcess(lib, modelPath string, reqs []*oip.InferRequest) (*inProcess, func(), error) {
	if _, err := backend.InitORT(lib); err != nil {
		return nil, nil, err
	}
	// The backend's session options for the demo models (config.yaml
	// defaults): one intra-op and one inter-op thread.
	sess, err := backend.NewSession(modelPath, backend.SessionOptions{IntraOpThreads: 1, InterOpThreads: 1})
	if err != nil {
		return nil, nil, err
	}
	p := &inProcess{sess: sess}
	for _, r := range reqs {
		p.inputs = append(p.inputs, r.Inputs)
	}
	return p, sess.Close, nil
}

// Send implements loadtest.Sender.
func (p *inProcess) Send(ctx context.Context, i int) string {
	if _, err := p.sess.Infer(p.inputs[i%len(p.inputs)]); err != nil {
		return "inprocess_" + oip.CodeOf(err).GRPCCode().String()
	}
	return ""
}

func goVersion() string { return runtime.Version() }
