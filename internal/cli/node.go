package cli

import (
	"fmt"
	"io"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
)

func newNodeCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Register and inspect the hypervisor nodes whose agents do the file work",
	}
	cmd.AddCommand(
		newNodeRegisterCommand(g),
		newNodeListCommand(g),
		newNodeShowCommand(g),
		newNodeUpdateCommand(g),
		newNodeRemoveCommand(g),
		newNodeRevokeCertCommand(g),
	)
	return cmd
}

func newNodeRegisterCommand(g *globals) *cobra.Command {
	var name, address string
	cmd := &cobra.Command{
		Use:   "register --name NAME --address ADDR",
		Short: "Register a node by its agent's management address",
		Long: "Register a node by its agent's management address. The address may be a host, host:port,\n" +
			"or an IP with a CIDR suffix (10.0.0.5/24); the control plane normalizes it, adding port 9090\n" +
			"when none is given.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			resp, err := c.nodes.RegisterNode(cmd.Context(), connect.NewRequest(&quarryv1.RegisterNodeRequest{
				Name:              name,
				ManagementAddress: address,
			}))
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.wantJSON() {
				return printJSON(out, resp.Msg)
			}
			n := resp.Msg.GetNode()
			fmt.Fprintf(out, "registered node %s at %s (id %s)\n", n.GetName(), n.GetManagementAddress(), n.GetId())
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "node name (required)")
	cmd.Flags().StringVar(&address, "address", "", "agent management address (required)")
	_ = cmd.MarkFlagRequired("name")
	_ = cmd.MarkFlagRequired("address")
	return cmd
}

func newNodeListCommand(g *globals) *cobra.Command {
	var (
		state string
		pages pageFlags
	)
	req := &quarryv1.ListNodesRequest{}
	cmd := &cobra.Command{
		Use:     "ls [--state ready|unreachable|unknown] [--search TEXT] [--limit N | --all]",
		Aliases: []string{"list"},
		Short:   "List nodes and their health",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			if state != "" {
				s, ok := quarryv1.NodeState_value["NODE_STATE_"+strings.ToUpper(state)]
				if !ok || s == 0 {
					return usageErrorf("--state %q: use ready, unreachable or unknown", state)
				}
				req.State = quarryv1.NodeState(s)
			}
			nodes, next, err := collect(cmd.Context(), pages, nodePages(c.nodes, req))
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.wantJSON() {
				return printJSON(out, &quarryv1.ListNodesResponse{Nodes: nodes, NextPageToken: next})
			}
			now := time.Now()
			t := newTable(out, "NAME", "ADDRESS", "STATE", "SINCE", "HOSTNAME", "VERSION", "LAST ERROR")
			for _, n := range nodes {
				lastErr := ""
				if n.GetState() != quarryv1.NodeState_NODE_STATE_READY {
					lastErr = truncate(n.GetStateReason(), 60)
				}
				t.row(n.GetName(), n.GetManagementAddress(), enumWord(n.GetState()),
					ago(localTime(n.GetStateSince()), now), n.GetHostname(), n.GetAgentVersion(), lastErr)
			}
			if err := t.flush(); err != nil {
				return err
			}
			noteMore(cmd.ErrOrStderr(), next, len(nodes), "nodes")
			return nil
		},
	}
	cmd.Flags().StringVar(&state, "state", "", "only nodes in this state: ready, unreachable or unknown")
	cmd.Flags().StringVar(&req.Search, "search", "", "only nodes whose name, address, hostname, version or last error contains this text")
	pages.register(cmd, "node", "nodes", defaultListLimit)
	return cmd
}

func newNodeShowCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME|ID",
		Aliases: []string{"get"},
		Short:   "Show a node's health, facts and what it reports about every pool",
		Args:    cobra.ExactArgs(1),
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
			resp, err := c.nodes.GetNode(ctx, connect.NewRequest(&quarryv1.GetNodeRequest{Id: n.GetId()}))
			if err != nil {
				return err
			}
			if g.wantJSON() {
				return printJSON(cmd.OutOrStdout(), resp.Msg)
			}
			return printNode(cmd.OutOrStdout(), resp.Msg.GetNode(), time.Now())
		},
	}
}

func printNode(w io.Writer, n *quarryv1.Node, now time.Time) error {
	state := enumWord(n.GetState())
	f := newTable(w)
	f.row("ID:", n.GetId())
	f.row("Name:", n.GetName())
	f.row("Address:", n.GetManagementAddress())
	f.row("State:", state+" "+since(localTime(n.GetStateSince()), now))
	if n.GetStateReason() != "" {
		f.row("Reason:", n.GetStateReason())
	}
	f.row("Last checked:", stamp(localTime(n.GetLastCheckedAt()), now))
	f.row("Hostname:", n.GetHostname())
	f.row("Agent version:", n.GetAgentVersion())
	if v := n.GetQemuImgVersion(); v != "" {
		f.row("qemu-img:", v)
	} else if n.GetState() == quarryv1.NodeState_NODE_STATE_READY {
		f.row("qemu-img:", "none: install qemu-utils on the node to convert images there")
	}
	f.row("Created:", stamp(localTime(n.GetCreatedAt()), now))
	if err := f.flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	if len(n.GetPools()) == 0 {
		fmt.Fprintln(w, "Pools: none reported")
		return nil
	}
	if n.GetState() == quarryv1.NodeState_NODE_STATE_READY {
		fmt.Fprintln(w, "Pools:")
	} else {
		// Mount facts come from the last successful check; say they may be stale.
		fmt.Fprintf(w, "Pools (as of the last successful check; the node is %s now):\n", state)
	}
	t := newTable(w, "POOL", "MOUNTED", "FREE", "TOTAL", "REASON")
	for _, m := range n.GetPools() {
		pool := m.GetStoragePoolName()
		if pool == "" {
			pool = m.GetStoragePoolId()
		}
		t.row(pool, yesNo(m.GetMounted()), sizeIf(m.GetMounted(), m.GetFreeBytes()),
			sizeIf(m.GetMounted(), m.GetTotalBytes()), m.GetReason())
	}
	return t.flush()
}

func newNodeUpdateCommand(g *globals) *cobra.Command {
	var name, address string
	cmd := &cobra.Command{
		Use:   "update NAME|ID [--name NEW] [--address ADDR]",
		Short: "Rename a node or change its management address",
		Args:  cobra.ExactArgs(1),
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
			req := &quarryv1.UpdateNodeRequest{Id: n.GetId()}
			if cmd.Flags().Changed("name") {
				req.Name = &name
			}
			if cmd.Flags().Changed("address") {
				req.ManagementAddress = &address
			}
			if req.Name == nil && req.ManagementAddress == nil {
				return usageErrorf("nothing to change: give --name and/or --address")
			}
			resp, err := c.nodes.UpdateNode(ctx, connect.NewRequest(req))
			if err != nil {
				return err
			}
			if g.wantJSON() {
				return printJSON(cmd.OutOrStdout(), resp.Msg)
			}
			u := resp.Msg.GetNode()
			fmt.Fprintf(cmd.OutOrStdout(), "updated node %s at %s (id %s)\n", u.GetName(), u.GetManagementAddress(), u.GetId())
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "new node name")
	cmd.Flags().StringVar(&address, "address", "", "new agent management address")
	return cmd
}

func newNodeRemoveCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME|ID",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove a node from the control plane",
		Args:    cobra.ExactArgs(1),
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
			resp, err := c.nodes.DeleteNode(ctx, connect.NewRequest(&quarryv1.DeleteNodeRequest{Id: n.GetId()}))
			if err != nil {
				return err
			}
			if g.wantJSON() {
				return printJSON(cmd.OutOrStdout(), resp.Msg)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed node %s (id %s)\n", n.GetName(), n.GetId())
			return nil
		},
	}
}
