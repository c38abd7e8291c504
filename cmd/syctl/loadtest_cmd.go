package main

// loadtestCommand dispatches `syctl loadtest` to runLoadtestCtx
// (loadtest.go). Its exit code is syctl's. A global -o given before the
// command (syctl -o json loadtest ...) is passed on.
func loadtestCommand() command {
	return command{name: "loadtest", usage: "loadtest --addr HOST:PORT --model NAME [flags]", summary: "drive bounded load at a proxy and report latency",
		run: func(a *app, args []string) error {
			if a.output != "" && a.output != "table" {
				args = append([]string{"-o", a.output}, args...)
			}
			if code := runLoadtestCtx(a.ctx, args, a.stdout, a.stderr); code != exitOK {
				return exitCode(code)
			}
			return nil
		}}
}
