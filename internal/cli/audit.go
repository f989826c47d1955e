package cli

import (
	"context"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

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
		before int64
		pages  pageFlags
	)
	req := &quarryv1.ListAuditRequest{}
	cmd := &cobra.Command{
		Use:     "ls [--search TEXT] [--result ok|error|CODE] [--before ID] [--limit N | --all]",
		Aliases: []string{"list"},
		Short:   "List audit entries, newest first",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			req.BeforeId = before
			entries, next, err := collect(cmd.Context(), pages, func(ctx context.Context, size int32, token string) ([]*quarryv1.AuditEntry, string, error) {
				r := proto.CloneOf(req)
				r.PageSize, r.PageToken = size, token
				resp, err := c.audit.ListAudit(ctx, connect.NewRequest(r))
				if err != nil {
					return nil, "", err
				}
				return resp.Msg.GetEntries(), resp.Msg.GetNextPageToken(), nil
			})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.wantJSON() {
				return printJSONList(out, entries)
			}
			t := newTable(out, "ID", "TIME", "ACTOR", "ROLE", "PROCEDURE", "TARGET", "RESULT", "REMOTE", "MESSAGE")
			for _, e := range entries {
				role := ""
				if e.GetRole() != quarryv1.Role_ROLE_UNSPECIFIED {
					role = strings.ToLower(enumWord(e.GetRole()))
				}
				t.row(strconv.FormatInt(e.GetId(), 10), localTime(e.GetTime()).Format("2006-01-02 15:04:05"), e.GetActor(), role,
					strings.TrimPrefix(e.GetProcedure(), "quarry.v1."), e.GetTarget(), e.GetResult(), e.GetRemoteAddr(),
					truncate(e.GetMessage(), 80))
			}
			if err := t.flush(); err != nil {
				return err
			}
			noteMore(cmd.ErrOrStderr(), next, len(entries), "entries")
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Search, "search", "", "only entries whose actor, procedure, target, result, message or address contains this text")
	cmd.Flags().StringVar(&req.Result, "result", "", `only entries with this result: "ok", "error" (refused or failed) or a code such as permission_denied`)
	cmd.Flags().Int64Var(&before, "before", 0, "only entries older than this id")
	pages.register(cmd, "entry", "entries", 50)
	return cmd
}
