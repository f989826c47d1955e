// Package cli builds the quarry command tree. The server and agent commands
// start daemons; every other command talks to the control plane's public API
// only, through the generated Connect clients.
package cli

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/quarry-project/quarry/internal/auth"
	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
)

// Version is set at build time with -ldflags "-X ...cli.Version=...".
var Version = "dev"

// Main runs the command line and returns the process exit code.
func Main(args []string) int { return run(args, os.Stdout, os.Stderr) }

// run is Main with its output streams, for tests.
func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := interruptible()
	defer stop()
	root, g := newRoot()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	return report(stderr, cmd, err, g.output == "json" || jsonRequested(args), context.Cause(ctx))
}

// interruptible returns a context that SIGINT or SIGTERM cancels with an
// *interrupted cause. Daemons shut down gracefully on it; a second signal
// kills the process as usual.
func interruptible() (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			signal.Stop(sigs)
			cancel(&interrupted{sig: s})
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		cancel(nil)
	}
}

// globals are the flags every API command shares.
type globals struct {
	server    string
	output    string
	tokenFile string
}

// NewRootCommand returns the whole command tree.
func NewRootCommand() *cobra.Command {
	root, _ := newRoot()
	return root
}

func newRoot() (*cobra.Command, *globals) {
	g := &globals{}
	root := &cobra.Command{
		Use:           "quarry",
		Short:         "Quarry manages the disk images VMs boot from across the storage pools of a KVM cluster",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.AddCommand(
		newServerCommand(),
		newAgentCommand(),
		newMigrateStoreCommand(),
		g.clientCommand(newNodeCommand(g)),
		g.clientCommand(newPoolCommand(g)),
		g.clientCommand(newImageCommand(g)),
		g.clientCommand(newCatalogCommand(g)),
		g.clientCommand(newJobCommand(g)),
		g.clientCommand(newTokenCommand(g)),
		g.clientCommand(newAuditCommand(g)),
	)
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	finishTree(root)
	g.addCompletions(root)
	return root, g
}

// defaultServer is the control plane commands talk to unless told.
func defaultServer() string {
	if s := os.Getenv("QUARRY_SERVER"); s != "" {
		return s
	}
	return "http://127.0.0.1:8080"
}

// clientCommand gives a command group of the CLI the flags of the API
// client. They are the groups' flags, not the root's, so that the daemons'
// help does not list flags they do not take; `quarry --server URL node ls`
// still works, as cobra parses them wherever they stand.
func (g *globals) clientCommand(cmd *cobra.Command) *cobra.Command {
	f := cmd.PersistentFlags()
	f.StringVar(&g.server, "server", defaultServer(), "control plane URL (env QUARRY_SERVER)")
	f.StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	f.StringVar(&g.tokenFile, "token-file", "",
		"file holding the API token (default: env QUARRY_TOKEN, else the admin token of a server on this host)")
	return cmd
}

// clients are the public API clients for one invocation.
type clients struct {
	base   string
	token  string // for the endpoints that are not RPCs (uploads)
	nodes  quarryv1connect.NodeServiceClient
	pools  quarryv1connect.StoragePoolServiceClient
	tokens quarryv1connect.TokenServiceClient
	audit  quarryv1connect.AuditServiceClient
	images quarryv1connect.ImageServiceClient
	jobs   quarryv1connect.JobServiceClient
}

func (g *globals) clients() (*clients, error) {
	if g.output != "table" && g.output != "json" {
		return nil, usageErrorf("--output must be table or json, not %q", g.output)
	}
	base := strings.TrimRight(g.server, "/")
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return nil, usageErrorf("--server must be an http:// or https:// URL, not %q", g.server)
	}
	cred, err := g.credential(base)
	if err != nil {
		return nil, err
	}
	tr, err := controlPlaneTransport()
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Transport: checkedTransport{server: base, base: &auth.Transport{Token: cred.token, Base: tr}}}
	opt := connect.WithInterceptors(cred, brokenConnections{})
	return &clients{
		base:   base,
		token:  cred.token,
		nodes:  quarryv1connect.NewNodeServiceClient(hc, base, opt),
		pools:  quarryv1connect.NewStoragePoolServiceClient(hc, base, opt),
		tokens: quarryv1connect.NewTokenServiceClient(hc, base, opt),
		audit:  quarryv1connect.NewAuditServiceClient(hc, base, opt),
		images: quarryv1connect.NewImageServiceClient(hc, base, opt),
		jobs:   quarryv1connect.NewJobServiceClient(hc, base, opt),
	}, nil
}
