// Package cli builds the quarry command tree. The server and agent commands
// start daemons; every other command talks to the control plane's public API
// only, through the generated Connect clients.
package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
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
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := NewRootCommand()
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", describe(err))
		return 1
	}
	return 0
}

// globals are the flags every API command shares.
type globals struct {
	server    string
	output    string
	tokenFile string
}

// NewRootCommand returns the whole command tree.
func NewRootCommand() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "quarry",
		Short:         "Quarry manages the disk images VMs boot from across the storage pools of a KVM cluster",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	def := os.Getenv("QUARRY_SERVER")
	if def == "" {
		def = "http://127.0.0.1:8080"
	}
	root.PersistentFlags().StringVar(&g.server, "server", def, "control plane URL (env QUARRY_SERVER)")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	root.PersistentFlags().StringVar(&g.tokenFile, "token-file", "",
		"file holding the API token (default: env QUARRY_TOKEN, else the admin token of a server on this host)")
	root.AddCommand(
		newServerCommand(),
		newAgentCommand(),
		newNodeCommand(g),
		newPoolCommand(g),
		newImageCommand(g),
		newCatalogCommand(g),
		newJobCommand(g),
		newTokenCommand(g),
		newAuditCommand(g),
	)
	return root
}

// clients are the public API clients for one invocation.
type clients struct {
	base   string
	nodes  quarryv1connect.NodeServiceClient
	pools  quarryv1connect.StoragePoolServiceClient
	tokens quarryv1connect.TokenServiceClient
	audit  quarryv1connect.AuditServiceClient
	images quarryv1connect.ImageServiceClient
	jobs   quarryv1connect.JobServiceClient
}

func (g *globals) clients() (*clients, error) {
	if g.output != "table" && g.output != "json" {
		return nil, fmt.Errorf("--output must be table or json, not %q", g.output)
	}
	base := strings.TrimRight(g.server, "/")
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		return nil, fmt.Errorf("--server must be an http:// or https:// URL, not %q", g.server)
	}
	cred, err := g.credential(base)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Transport: &auth.Transport{Token: cred.token}}
	opt := connect.WithInterceptors(cred)
	return &clients{
		base:   base,
		nodes:  quarryv1connect.NewNodeServiceClient(hc, base, opt),
		pools:  quarryv1connect.NewStoragePoolServiceClient(hc, base, opt),
		tokens: quarryv1connect.NewTokenServiceClient(hc, base, opt),
		audit:  quarryv1connect.NewAuditServiceClient(hc, base, opt),
		images: quarryv1connect.NewImageServiceClient(hc, base, opt),
		jobs:   quarryv1connect.NewJobServiceClient(hc, base, opt),
	}, nil
}

// describe turns an API error into the sentence the server wrote, without
// the Connect code prefix a person does not need.
func describe(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		if ce.Code() == connect.CodeUnavailable && errors.As(err, new(*net.OpError)) {
			return "cannot reach the control plane (" + ce.Message() + "); is `quarry server` running, and does --server point at it?"
		}
		return ce.Message()
	}
	return err.Error()
}
