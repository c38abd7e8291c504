package main

import (
	"errors"

	_ "github.com/switchyard-dev/switchyard/proxy" // its init serves as the shadow agent (shadow/agent.Main)
)

func init() {
	register("shadow-agent", "internal: the proxy's shadow mirroring process (started by 'proxy', --shadow-process=agent)", runShadowAgent)
}

// runShadowAgent is only reached by hand. The proxy starts this binary
// as its shadow agent with SWITCHYARD_SHADOW_AGENT=1 and the argument
// shadow-agent (so the process is named in ps); the proxy package's init
// then runs the agent on the proxy's socket and exits before main.
func runShadowAgent(args []string) error {
	return errors.New("this command is started by 'switchyard proxy' (--shadow-process=agent, the default) with the proxy's socket, not by hand")
}
