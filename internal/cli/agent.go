package cli

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/quarry-project/quarry/internal/agent"
	"github.com/quarry-project/quarry/internal/bytesize"
)

func newAgentCommand() *cobra.Command {
	var (
		cfg      agent.Config
		binds    []string
		logLevel string
		nodeRate string
		segMin   string
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent that does the file work in the pools this node can reach",
		Long: `Run the node agent. The control plane dials it at the node's management
address (port 9090 by default) to learn the node's facts and whether it mounts
each storage pool.

The agent answers the control plane only, over mutual TLS. On its first start
it enrolls: it makes a key, sends a signing request with a join token
(quarry token create --join) to the control plane at --server, and keeps the
certificate it gets in --data-dir. Later starts need no token. With --ca-hash
(printed with the token) it refuses a control plane whose CA is another.

  quarry agent --server http://cp:8080 --join-token qj_... --ca-hash sha256:... \
      --name n2 --advertise 10.0.0.12

The node named --name gets the certificate; when no node has that name, the
control plane registers one at the --advertise address (default: the --listen
address, when it names a host).

--fs-root and --bind give the agent its own view of the filesystem, so several
agents can run on one machine: a pool path is looked up under the --bind
directory whose PATH prefix matches it, else under --fs-root.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			if cfg.NodeDownloadRate, err = bytesize.Parse(nodeRate, true); err != nil {
				return fmt.Errorf("--node-download-rate: %w", err)
			}
			if cfg.DownloadSegmentMin, err = bytesize.Parse(segMin, false); err != nil || cfg.DownloadSegmentMin < 1<<20 {
				return fmt.Errorf("--download-segment-min %q: give a size of 1MiB or more, such as 64MiB", segMin)
			}
			if cfg.DownloadConnections < 1 || cfg.DownloadHostConnections < 1 {
				return fmt.Errorf("--download-connections and --download-host-connections must be 1 or more")
			}
			for _, b := range binds {
				bd, err := agent.ParseBind(b)
				if err != nil {
					return err
				}
				cfg.Binds = append(cfg.Binds, bd)
			}
			if cfg.Enrollment.JoinToken == "" {
				cfg.Enrollment.JoinToken = os.Getenv("QUARRY_JOIN_TOKEN")
			}
			if cfg.Enrollment.Name == "" {
				cfg.Enrollment.Name = cfg.Hostname
			}
			cfg.Logger, cfg.Version = log, Version
			if err := servePprof(log); err != nil {
				return err
			}
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
	f.StringVar(&cfg.DataDir, "data-dir", "/var/lib/quarry-agent", "directory for the agent's own state and its certificate")
	f.StringVar(&cfg.FSRoot, "fs-root", "", "resolve pool paths under this directory (several agents on one machine)")
	f.StringArrayVar(&binds, "bind", nil, "PATH=DIR: serve pool paths under PATH from DIR, like a bind mount (repeatable)")
	f.StringVar(&cfg.Hostname, "hostname", host, "hostname reported to the control plane")
	f.StringVar(&cfg.QemuImg, "qemu-img", "qemu-img", "the qemu-img that converts images (Debian's qemu-utils): a path or a name on PATH")
	f.DurationVar(&cfg.CheckpointEvery, "checkpoint-interval", 2*time.Second, "how often a download makes its progress durable, or every 32 MiB, whichever comes first: what a crash can make it fetch again")
	f.Int64Var(&cfg.PeerReadRate, "peer-read-rate", 0, "bytes per second each copy another node pulls from this one is served at, at most (0: no cap)")
	f.IntVar(&cfg.DownloadConnections, "download-connections", 4, "connections a download of a large file may use at once when the origin serves ranges (1: one stream)")
	f.StringVar(&segMin, "download-segment-min", "64MiB", "files from this size on are downloaded in segments over several connections")
	f.IntVar(&cfg.DownloadHostConnections, "download-host-connections", 8, "connections all of the node's downloads may open to one host together")
	f.StringVar(&nodeRate, "node-download-rate", "0", "bandwidth limit of all of the node's downloads together, such as 200MiB/s, shared fairly between them (0: none)")
	// Not the default of the flag: --help would print the secret.
	f.StringVar(&cfg.Enrollment.JoinToken, "join-token", "",
		"join token to enroll with when the agent has no certificate yet (env QUARRY_JOIN_TOKEN)")
	f.StringVar(&cfg.Enrollment.Server, "server", defaultServer(), "control plane URL to enroll with (env QUARRY_SERVER)")
	f.StringVar(&cfg.Enrollment.CAHash, "ca-hash", "", "sha256:HEX pin of the control plane's CA; enrolling fails on any other")
	f.StringVar(&cfg.Enrollment.Name, "name", "", "node name to enroll as (default: --hostname)")
	f.BoolVar(&cfg.Enrollment.Replace, "replace", false, "enroll even though the node has an enrolled agent, which the control plane then stops trusting (not needed with a token made with --node)")
	f.StringVar(&cfg.Enrollment.Advertise, "advertise", "",
		"management address the control plane dials, sent when enrolling (default: --listen when it names a host)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}
