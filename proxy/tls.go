package proxy

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/switchyard-dev/switchyard/internal/tlsutil"
	"github.com/switchyard-dev/switchyard/proxy/xdsclient"
)

// controlPlaneDialOptions are the xDS and stats dials' options: TLS
// (mTLS with a client certificate) from files, and a bearer token sent
// in each stream's metadata. Nil, nil for a plaintext, anonymous dial.
func controlPlaneDialOptions(files *tlsutil.Files, token string, log *slog.Logger) ([]grpc.DialOption, error) {
	var opts []grpc.DialOption
	if files != nil {
		cfg, err := tlsutil.NewClientConfig(*files, tlsutil.ClientOptions{Logger: log})
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	}
	if token != "" {
		if strings.ContainsAny(token, " \t\r\n") {
			return nil, errors.New("the token has whitespace in it")
		}
		opts = append(opts, grpc.WithPerRPCCredentials(bearer{token: token, secure: files != nil}))
	}
	return opts, nil
}

// bearer sends "authorization: Bearer <token>" on every call. It does not
// insist on TLS (grpc-go would then refuse the plaintext dial): a token on
// a plaintext connection is for loopback set-ups, as the REST API's.
type bearer struct {
	token  string
	secure bool
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

func (b bearer) RequireTransportSecurity() bool { return b.secure }

// xdsMetadata is the node metadata sent to the control plane: the admin
// address (a URL, https://host:port, when the admin listener serves TLS;
// the control plane's shadow report reads both forms).
func (p *Proxy) xdsMetadata() map[string]string {
	admin := p.AdminAddr()
	if admin != "" && p.tlsSrv != nil {
		admin = "https://" + admin
	}
	return map[string]string{xdsclient.MetadataAdminAddr: admin}
}
