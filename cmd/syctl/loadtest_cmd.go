package main

import "fmt"

// loadtestCommand dispatches `syctl loadtest` to runLoadtest (loadtest.go,
// owned by the load-test work). Until that file lands, the command says so.
func loadtestCommand() command {
	return command{name: "loadtest", usage: "loadtest [flags]", summary: "drive bounded load at a proxy and report latency",
		run: func(a *app, args []string) error {
			fmt.Fprintln(a.stderr, "error: syctl loadtest is not built into this syctl yet")
			return exitCode(exitError)
		}}
}
