package cli

import (
	"fmt"
	"io"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/quarry-project/quarry/internal/bytesize"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
)

func newPoolCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pool",
		Short: "Manage the storage pools where images live",
	}
	cmd.AddCommand(
		newPoolCreateCommand(g),
		newPoolListCommand(g),
		newPoolShowCommand(g),
		newPoolUpdateCommand(g),
		newPoolRemoveCommand(g),
	)
	return cmd
}

func newPoolCreateCommand(g *globals) *cobra.Command {
	req := &quarryv1.CreatePoolRequest{}
	var assign []string
	cmd := &cobra.Command{
		Use:   "create --name NAME --path PATH [--shared] [--assign NODE,...]",
		Short: "Create a storage pool",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if req.AssignedNodeIds, err = resolveNodeIDs(ctx, c.nodes, nodeRefs(assign)); err != nil {
				return err
			}
			resp, err := c.pools.CreatePool(ctx, connect.NewRequest(req))
			if err != nil {
				return err
			}
			if g.wantJSON() {
				return printJSON(cmd.OutOrStdout(), resp.Msg)
			}
			p := resp.Msg.GetPool()
			fmt.Fprintf(cmd.OutOrStdout(), "created pool %s at %s (id %s)\n", p.GetName(), p.GetPath(), p.GetId())
			return printMountResult(cmd.OutOrStdout(), cmd.ErrOrStderr(), p)
		},
	}
	cmd.Flags().StringVar(&req.Name, "name", "", "pool name (required)")
	cmd.Flags().StringVar(&req.Path, "path", "", "absolute path of the pool directory on the nodes (required)")
	cmd.Flags().StringVar(&req.Type, "type", "dir", "pool driver")
	cmd.Flags().BoolVar(&req.Shared, "shared", false, "the same filesystem (NFS, CephFS…) is mounted at the path on several nodes")
	cmd.Flags().StringSliceVar(&assign, "assign", nil, "nodes (names or ids) the pool is used from, in preference order")
	_ = cmd.MarkFlagRequired("name")
	_ = cmd.MarkFlagRequired("path")
	return cmd
}

func newPoolListCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List storage pools and where they are mounted",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			resp, err := c.pools.ListPools(cmd.Context(), connect.NewRequest(&quarryv1.ListPoolsRequest{}))
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.wantJSON() {
				return printJSON(out, resp.Msg)
			}
			t := newTable(out, "NAME", "PATH", "SHARED", "ASSIGNED", "MOUNTED ON", "FREE")
			for _, p := range resp.Msg.GetPools() {
				var mounted []string
				free := ""
				for _, m := range p.GetNodes() {
					if !m.GetMounted() {
						continue
					}
					if len(mounted) == 0 {
						free = bytesize.Format(m.GetFreeBytes())
					}
					mounted = append(mounted, mountNodeName(m))
				}
				t.row(p.GetName(), p.GetPath(), yesNo(p.GetShared()),
					strings.Join(assignedNames(p), ","), mountedOn(mounted), free)
			}
			return t.flush()
		},
	}
}

// mountedOn names the nodes when they fit in a column and counts them when not.
func mountedOn(nodes []string) string {
	switch {
	case len(nodes) == 0:
		return "none"
	case len(nodes) > 3:
		return fmt.Sprintf("%d nodes", len(nodes))
	default:
		return strings.Join(nodes, ",")
	}
}

func newPoolShowCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME|ID",
		Aliases: []string{"get"},
		Short:   "Show a pool and, for every node, whether it mounts the pool and why not",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			p, err := resolvePool(ctx, c.pools, args[0])
			if err != nil {
				return err
			}
			resp, err := c.pools.GetPool(ctx, connect.NewRequest(&quarryv1.GetPoolRequest{Id: p.GetId()}))
			if err != nil {
				return err
			}
			if g.wantJSON() {
				return printJSON(cmd.OutOrStdout(), resp.Msg)
			}
			return printPool(cmd.OutOrStdout(), resp.Msg.GetPool(), resp.Msg.GetCandidates(), time.Now())
		},
	}
}

func printPool(w io.Writer, p *quarryv1.StoragePool, cands []*quarryv1.PlacementCandidate, now time.Time) error {
	names := nodeNames(p)
	f := newTable(w)
	f.row("ID:", p.GetId())
	f.row("Name:", p.GetName())
	f.row("Type:", p.GetType())
	f.row("Path:", p.GetPath())
	f.row("Shared:", yesNo(p.GetShared()))
	f.row("Assigned:", strings.Join(assignedNames(p), ", "))
	if id := p.GetInitializedByNodeId(); id != "" {
		f.row("Initialized by:", nameOr(names, id))
	} else {
		f.row("Initialized by:", "no node yet")
	}
	f.row("Created:", stamp(localTime(p.GetCreatedAt()), now))
	if err := f.flush(); err != nil {
		return err
	}
	if err := printPoolNodes(w, p); err != nil {
		return err
	}
	return printPlacement(w, cands)
}

func printPoolNodes(w io.Writer, p *quarryv1.StoragePool) error {
	fmt.Fprintln(w)
	if len(p.GetNodes()) == 0 && len(p.GetAssignedNodeIds()) == 0 {
		fmt.Fprintln(w, "Nodes: none assigned and none mounts it")
		return nil
	}
	fmt.Fprintln(w, "Nodes:")
	t := newTable(w, "NODE", "STATE", "ASSIGNED", "MOUNTED", "FREE", "TOTAL", "REASON")
	seen := map[string]bool{}
	for _, m := range p.GetNodes() {
		seen[m.GetNodeId()] = true
		t.row(mountNodeName(m), enumWord(m.GetNodeState()), yesNo(m.GetAssigned()), yesNo(m.GetMounted()),
			sizeIf(m.GetMounted(), m.GetFreeBytes()), sizeIf(m.GetMounted(), m.GetTotalBytes()), m.GetReason())
	}
	// An assigned node the server has no view for still deserves a row, so
	// the operator sees it is not serving the pool.
	for _, id := range p.GetAssignedNodeIds() {
		if !seen[id] {
			t.row(id, "", "yes", "no", "", "", "no report from this node")
		}
	}
	return t.flush()
}

// printMountResult shows, after a pool was created or changed, whether each
// node mounts it, and warns on stderr when none of the nodes it is used from
// (the assigned ones, or any when none is assigned) does: the pool is
// accepted, but nothing can be done in it until one does.
func printMountResult(out, errOut io.Writer, p *quarryv1.StoragePool) error {
	if err := printPoolNodes(out, p); err != nil {
		return err
	}
	assigned := map[string]bool{}
	for _, id := range p.GetAssignedNodeIds() {
		assigned[id] = true
	}
	var why []string
	for _, m := range p.GetNodes() {
		if len(assigned) > 0 && !assigned[m.GetNodeId()] {
			continue
		}
		if m.GetMounted() {
			return nil
		}
		if r := m.GetReason(); r != "" {
			why = append(why, mountNodeName(m)+": "+r)
		}
	}
	which := "no assigned node"
	if len(assigned) == 0 {
		which = "no node"
	}
	msg := fmt.Sprintf("warning: %s mounts pool %s at %s", which, p.GetName(), p.GetPath())
	if len(why) > 0 {
		msg += " (" + strings.Join(why, "; ") + ")"
	}
	fmt.Fprintf(errOut, "%s; create the directory or mount the filesystem there on a node, and the next health check picks it up (quarry pool show %s)\n",
		msg, p.GetName())
	return nil
}

// printPlacement shows the order in which operations on the pool try
// nodes, and why each node ranks there or was dropped.
func printPlacement(w io.Writer, cands []*quarryv1.PlacementCandidate) error {
	if len(cands) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Placement (operations try the kept nodes in this order):")
	t := newTable(w, "RANK", "NODE", "REASON")
	rank := 0
	for _, c := range cands {
		r := "dropped"
		if c.GetKept() {
			rank++
			r = fmt.Sprint(rank)
		}
		name := c.GetNodeName()
		if name == "" {
			name = c.GetNodeId()
		}
		t.row(r, name, c.GetReason())
	}
	return t.flush()
}

// nodeNames maps node ids to names from the pool's per-node views, which
// cover every assigned node, so listing pools needs no extra call.
func nodeNames(p *quarryv1.StoragePool) map[string]string {
	names := map[string]string{}
	for _, m := range p.GetNodes() {
		if m.GetNodeName() != "" {
			names[m.GetNodeId()] = m.GetNodeName()
		}
	}
	return names
}

func assignedNames(p *quarryv1.StoragePool) []string {
	names := nodeNames(p)
	var out []string
	for _, id := range p.GetAssignedNodeIds() {
		out = append(out, nameOr(names, id))
	}
	return out
}

func nameOr(names map[string]string, id string) string {
	if n, ok := names[id]; ok {
		return n
	}
	return id
}

func mountNodeName(m *quarryv1.PoolMount) string {
	if m.GetNodeName() != "" {
		return m.GetNodeName()
	}
	return m.GetNodeId()
}

func newPoolUpdateCommand(g *globals) *cobra.Command {
	var (
		name   string
		shared bool
		assign []string
	)
	cmd := &cobra.Command{
		Use:   "update NAME|ID [--name NEW] [--shared=true|false] [--assign NODE,...]",
		Short: "Change a pool's name, sharing or assigned nodes (the path cannot change)",
		Long: "Change a pool's name, sharing or assigned nodes. Only the flags given are changed;\n" +
			"--assign \"\" clears the assigned nodes. The path is the pool's identity and cannot change.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			flags := cmd.Flags()
			if !flags.Changed("name") && !flags.Changed("shared") && !flags.Changed("assign") {
				return usageErrorf("nothing to update; give --name, --shared or --assign")
			}
			c, err := g.clients()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			p, err := resolvePool(ctx, c.pools, args[0])
			if err != nil {
				return err
			}
			req := &quarryv1.UpdatePoolRequest{Id: p.GetId()}
			if flags.Changed("name") {
				req.Name = &name
			}
			if flags.Changed("shared") {
				req.Shared = &shared
			}
			if flags.Changed("assign") {
				ids, err := resolveNodeIDs(ctx, c.nodes, nodeRefs(assign))
				if err != nil {
					return err
				}
				req.AssignedNodeIds = &quarryv1.NodeIDs{Ids: ids}
			}
			resp, err := c.pools.UpdatePool(ctx, connect.NewRequest(req))
			if err != nil {
				return err
			}
			if g.wantJSON() {
				return printJSON(cmd.OutOrStdout(), resp.Msg)
			}
			u := resp.Msg.GetPool()
			fmt.Fprintf(cmd.OutOrStdout(), "updated pool %s (id %s)\n", u.GetName(), u.GetId())
			return printMountResult(cmd.OutOrStdout(), cmd.ErrOrStderr(), u)
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "new pool name")
	cmd.Flags().BoolVar(&shared, "shared", false, "the same filesystem is mounted at the path on several nodes")
	cmd.Flags().StringSliceVar(&assign, "assign", nil, "nodes (names or ids) the pool is used from, in preference order; \"\" clears")
	return cmd
}

// nodeRefs cleans --assign values: "n1, n2" and a trailing comma are fine.
func nodeRefs(raw []string) []string {
	var refs []string
	for _, r := range raw {
		if r = strings.TrimSpace(r); r != "" {
			refs = append(refs, r)
		}
	}
	return refs
}

func newPoolRemoveCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME|ID",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove a storage pool from the control plane",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			p, err := resolvePool(ctx, c.pools, args[0])
			if err != nil {
				return err
			}
			resp, err := c.pools.DeletePool(ctx, connect.NewRequest(&quarryv1.DeletePoolRequest{Id: p.GetId()}))
			if err != nil {
				return err
			}
			if g.wantJSON() {
				return printJSON(cmd.OutOrStdout(), resp.Msg)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed pool %s (id %s)\n", p.GetName(), p.GetId())
			return nil
		},
	}
}
