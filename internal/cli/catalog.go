package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
)

func newCatalogStatusCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status [ENTRY]",
		Short: "Show, per catalog entry and pool, the current build, the last check for a new one and the next",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			resp, err := c.images.GetCatalogStatus(cmd.Context(), connect.NewRequest(&quarryv1.GetCatalogStatusRequest{CatalogId: id}))
			if err != nil {
				return err
			}
			if g.wantJSON() {
				return printJSON(cmd.OutOrStdout(), resp.Msg)
			}
			return printCatalogStatus(cmd.OutOrStdout(), resp.Msg)
		},
	}
}

func printCatalogStatus(out io.Writer, m *quarryv1.GetCatalogStatusResponse) error {
	if iv := m.GetInterval().AsDuration(); iv > 0 {
		fmt.Fprintf(out, "Upstream is checked every %s; %d builds are kept per pool.\n", shortDuration(iv), m.GetKeep())
	} else {
		fmt.Fprintf(out, "Periodic checks are off (quarry server --catalog-refresh); quarry catalog refresh checks now. %d builds are kept per pool.\n", m.GetKeep())
	}
	if len(m.GetStatuses()) == 0 {
		fmt.Fprintln(out, "No catalog image is in a pool yet; add one with quarry image download --catalog ID --pool POOL.")
		return nil
	}
	now := time.Now()
	t := newTable(out, "ENTRY", "POOL", "CURRENT", "BUILD", "BUILDS", "LAST CHECK", "NEXT CHECK", "STATUS")
	for _, st := range m.GetStatuses() {
		status := st.GetResult()
		if st.GetError() != "" {
			status = "error: " + st.GetError()
		}
		if st.GetJobId() != "" {
			status = "downloading a new build (job " + st.GetJobId() + "): " + status
		}
		t.row(st.GetCatalogId(), st.GetStoragePoolName(), st.GetCurrentImageName(), st.GetCurrentBuild(),
			fmt.Sprint(len(st.GetBuilds())), ago(localTime(st.GetLastCheckAt()), now), ago(localTime(st.GetNextCheckAt()), now), status)
	}
	return t.flush()
}

func newCatalogRefreshCommand(g *globals) *cobra.Command {
	var wait bool
	cmd := &cobra.Command{
		Use:   "refresh [ENTRY] [--wait]",
		Short: "Check upstream now for new builds of one catalog entry or of every entry in a pool",
		Long: `Check upstream now for new builds of one catalog entry, or of every entry present in a pool.
A new build is downloaded next to the current one and becomes current once verified; older builds
beyond quarry server --catalog-keep are deleted. With --wait, wait for the checks and downloads to end
and show the outcome.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			resp, err := c.images.RefreshCatalog(cmd.Context(), connect.NewRequest(&quarryv1.RefreshCatalogRequest{CatalogId: id}))
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			before := resp.Msg.GetStatuses()
			if len(before) == 0 {
				fmt.Fprintln(out, "No catalog image is in a pool yet; nothing to refresh.")
				return nil
			}
			if !wait {
				if g.wantJSON() {
					return printJSON(out, resp.Msg)
				}
				fmt.Fprintf(out, "Checking %d catalog image(s) in pools now; see quarry catalog status.\n", len(before))
				return nil
			}
			st, err := waitRefreshed(cmd.Context(), c, id, before)
			if err != nil {
				return err
			}
			if g.wantJSON() {
				return printJSON(out, st)
			}
			return printCatalogStatus(out, st)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the checks and any new build's download have ended")
	return cmd
}

// waitRefreshed polls the status until every entry and pool in before was
// checked after it and has no download in flight.
func waitRefreshed(ctx context.Context, c *clients, id string, before []*quarryv1.CatalogStatus) (*quarryv1.GetCatalogStatusResponse, error) {
	last := map[string]time.Time{}
	for _, st := range before {
		last[st.GetCatalogId()+"/"+st.GetStoragePoolId()] = localTime(st.GetLastCheckAt())
	}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := c.images.GetCatalogStatus(ctx, connect.NewRequest(&quarryv1.GetCatalogStatusRequest{CatalogId: id}))
		if err != nil {
			return nil, err
		}
		done := 0
		for _, st := range resp.Msg.GetStatuses() {
			prev, ok := last[st.GetCatalogId()+"/"+st.GetStoragePoolId()]
			if checked := localTime(st.GetLastCheckAt()); ok && checked.After(prev) && st.GetJobId() == "" {
				done++
			}
		}
		if done >= len(last) {
			return resp.Msg, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}
