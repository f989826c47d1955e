package cli

import (
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
)

func newAuditCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Read the audit log: every change made through the API, allowed or refused (admin)",
	}
	cmd.AddCommand(newAuditListCommand(g))
	return cmd
}

func newAuditListCommand(g *globals) *cobra.Command {
	var (
		limit  int32
		before int64
	)
	cmd := &cobra.Command{
		Use:     "ls [--limit N] [--before ID]",
		Aliases: []string{"list"},
		Short:   "List audit entries, newest first",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			resp, err := c.audit.ListAudit(cmd.Context(), connect.NewRequest(&quarryv1.ListAuditRequest{Limit: limit, BeforeId: before}))
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.wantJSON() {
				return printJSONList(out, resp.Msg.GetEntries())
			}
			t := newTable(out, "ID", "TIME", "ACTOR", "ROLE", "PROCEDURE", "TARGET", "RESULT", "REMOTE", "MESSAGE")
			for _, e := range resp.Msg.GetEntries() {
				role := ""
				if e.GetRole() != quarryv1.Role_ROLE_UNSPECIFIED {
					role = strings.ToLower(enumWord(e.GetRole()))
				}
				t.row(strconv.FormatInt(e.GetId(), 10), localTime(e.GetTime()).Format("2006-01-02 15:04:05"), e.GetActor(), role,
					strings.TrimPrefix(e.GetProcedure(), "quarry.v1."), e.GetTarget(), e.GetResult(), e.GetRemoteAddr(),
					truncate(e.GetMessage(), 80))
			}
			return t.flush()
		},
	}
	cmd.Flags().Int32Var(&limit, "limit", 50, "at most this many entries (up to 1000)")
	cmd.Flags().Int64Var(&before, "before", 0, "only entries older than this id (paging)")
	return cmd
}
