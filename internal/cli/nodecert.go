package cli

import (
	"fmt"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
)

func newNodeRevokeCertCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke-cert NAME|ID",
		Short: "Stop trusting the certificate of a node's agent, at once (admin)",
		Long: "Stop trusting the certificate the node's agent holds: the control plane refuses it from the\n" +
			"next connection, and the node is \"not enrolled\" until its agent enrolls again with a join token\n" +
			"(remove agent.pem from the agent's --data-dir and start it with --join-token).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			n, err := resolveNode(ctx, c.nodes, args[0])
			if err != nil {
				return err
			}
			resp, err := c.nodes.RevokeNodeCertificate(ctx, connect.NewRequest(&quarryv1.RevokeNodeCertificateRequest{Id: n.GetId()}))
			if err != nil {
				return err
			}
			if g.wantJSON() {
				return printJSON(cmd.OutOrStdout(), resp.Msg)
			}
			if s := resp.Msg.GetRevokedSerial(); s != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "revoked certificate %s of node %s; enroll its agent again with a join token (quarry token create --join --node %s)\n",
					s, n.GetName(), n.GetName())
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "node %s had no enrolled certificate; nothing to revoke\n", n.GetName())
			}
			return nil
		},
	}
}
