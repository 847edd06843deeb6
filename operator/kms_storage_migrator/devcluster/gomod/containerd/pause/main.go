// Command pause is the sandbox ("pause") process of the dev node's pods: it holds the pod's
// namespaces open and waits. registry.k8s.io/pause cannot be pulled here (no registry is
// reachable), so this static program is packed into a one-layer image instead.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	// As PID 1 of the sandbox it must also reap the zombies a shared PID namespace leaves it.
	signal.Ignore(syscall.SIGCHLD)
	<-signals
}
