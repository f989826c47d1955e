package cli

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/quarry-project/quarry/internal/agent"
)

func newAgentCommand() *cobra.Command {
	var (
		cfg      agent.Config
		binds    []string
		logLevel string
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent that does the file work in the pools this node can reach",
		Long: `Run the node agent. The control plane dials it at the node's management
address (port 9090 by default) to learn the node's facts and whether it mounts
each storage pool.

--fs-root and --bind give the agent its own view of the filesystem, so several
agents can run on one machine: a pool path is looked up under the --bind
directory whose PATH prefix matches it, else under --fs-root.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			for _, b := range binds {
				bd, err := agent.ParseBind(b)
				if err != nil {
					return err
				}
				cfg.Binds = append(cfg.Binds, bd)
			}
			cfg.Logger, cfg.Version = log, Version
			a, err := agent.New(cfg)
			if err != nil {
				return err
			}
			return a.Run(cmd.Context())
		},
	}
	host, _ := os.Hostname()
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", ":9090", "address of the node API")
	f.StringVar(&cfg.DataDir, "data-dir", "/var/lib/quarry-agent", "directory for the agent's own state")
	f.StringVar(&cfg.FSRoot, "fs-root", "", "resolve pool paths under this directory (several agents on one machine)")
	f.StringArrayVar(&binds, "bind", nil, "PATH=DIR: serve pool paths under PATH from DIR, like a bind mount (repeatable)")
	f.StringVar(&cfg.Hostname, "hostname", host, "hostname reported to the control plane")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}
