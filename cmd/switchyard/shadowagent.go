package main

import (
	"errors"
	"fmt"

	"github.com/switchyard-dev/switchyard/proxy"
)

func init() {
	register("shadow-agent", "internal: the proxy's shadow mirroring process (started by 'proxy --shadow-process=agent')", runShadowAgent)
}

// runShadowAgent is the child a proxy starts in agent mode: it serves the
// proxy's socket (descriptor 3) until the proxy closes it or dies.
func runShadowAgent(args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unexpected arguments: %v", args)
	}
	code, ok := proxy.ShadowAgentMain()
	if !ok {
		return errors.New("this command is started by 'switchyard proxy --shadow-process=agent' (it serves the proxy's socket), not by hand")
	}
	if code != 0 {
		return fmt.Errorf("exit code %d (see the log above)", code)
	}
	return nil
}
