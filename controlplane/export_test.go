package controlplane

import (
	"net"

	"github.com/switchyard-dev/switchyard/controlplane/store"
)

// APIListener is the bound API listener (a test closes it to fail Serve).
func (cp *ControlPlane) APIListener() net.Listener { return cp.apiLn }

// RawStore is the store as opened, without the instrumentation.
func (cp *ControlPlane) RawStore() store.Store { return cp.store }
