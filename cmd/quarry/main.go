// Command quarry is the one Quarry binary: control plane, node agent and CLI.
package main

import (
	"os"

	"github.com/quarry-project/quarry/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:]))
}
