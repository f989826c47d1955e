package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/quarry-project/quarry/internal/errclass"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
)

func newTokenCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke API tokens and agent join tokens (admin)",
		Long: `API tokens carry a role: viewer (read everything), operator (also images,
scans and jobs) or admin (also nodes, pools and tokens). Join tokens let an
agent enroll once and get its certificate. Secrets are shown once, when the
token is created; the control plane keeps only their hash. Tokens of kind sso
stand for dashboard single sign-on logins: they are made by signing in, carry
the role the identity provider's groups gave, end with their session, and
revoking one signs that user out.`,
	}
	cmd.AddCommand(newTokenCreateCommand(g), newTokenListCommand(g), newTokenRevokeCommand(g))
	return cmd
}

var roleFlags = map[string]quarryv1.Role{
	"viewer":   quarryv1.Role_ROLE_VIEWER,
	"operator": quarryv1.Role_ROLE_OPERATOR,
	"admin":    quarryv1.Role_ROLE_ADMIN,
}

func newTokenCreateCommand(g *globals) *cobra.Command {
	var (
		role, name, ttl, node string
		join, single          bool
	)
	cmd := &cobra.Command{
		Use:   "create [--role viewer|operator|admin] [--name N] [--ttl D] | --join [--node NODE] [--ttl 1h] [--single-use]",
		Short: "Create an API token, or with --join a token an agent enrolls with",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &quarryv1.CreateTokenRequest{Name: name, Kind: quarryv1.TokenKind_TOKEN_KIND_API, SingleUse: single, NodeName: node}
			if join {
				if cmd.Flags().Changed("role") {
					return usageErrorf("--role is for API tokens; a join token only lets an agent enroll")
				}
				req.Kind = quarryv1.TokenKind_TOKEN_KIND_JOIN
			} else {
				if single {
					return usageErrorf("--single-use is for join tokens (--join)")
				}
				if node != "" {
					return usageErrorf("--node is for join tokens (--join): it binds the token to the node it enrolls")
				}
				r, ok := roleFlags[strings.ToLower(role)]
				if !ok {
					return usageErrorf("--role %q: use viewer, operator or admin", role)
				}
				req.Role = r
			}
			if ttl != "" {
				d, err := parseTTL(ttl)
				if err != nil {
					return err
				}
				req.TtlSeconds = int64(d / time.Second)
			}
			c, err := g.clients()
			if err != nil {
				return err
			}
			resp, err := c.tokens.CreateToken(cmd.Context(), connect.NewRequest(req))
			if err != nil {
				return err
			}
			if g.wantJSON() {
				return printJSON(cmd.OutOrStdout(), resp.Msg)
			}
			return printCreatedToken(cmd.OutOrStdout(), c.base, resp.Msg, time.Now())
		},
	}
	f := cmd.Flags()
	f.StringVar(&role, "role", "viewer", "API token role: viewer, operator or admin")
	f.StringVar(&name, "name", "", "a name that says who or what uses the token")
	f.StringVar(&ttl, "ttl", "", "lifetime such as 12h or 30d (default: API tokens never expire, join tokens last 1h)")
	f.BoolVar(&join, "join", false, "create a join token for enrolling an agent")
	f.BoolVar(&single, "single-use", false, "join tokens: refuse the token after one enrollment")
	f.StringVar(&node, "node", "", "join tokens: enroll only the node of this name (and replace its enrolled agent, if it has one)")
	return cmd
}

// minTTL is the shortest lifetime a token may have: one that expires
// before anyone can use it is a mistake (--ttl 30 meant 30 of something
// longer than seconds), and the server refuses it too.
const minTTL = time.Minute

// parseTTL reads a Go duration, plus whole days ("30d"), of at least minTTL.
func parseTTL(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n > 0 && n <= 36500 {
			return time.Duration(n) * 24 * time.Hour, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < minTTL {
		return 0, usageErrorf("--ttl %q: give a lifetime of at least 1m, such as 90m, 12h or 30d", s)
	}
	return d, nil
}

func printCreatedToken(w io.Writer, base string, m *quarryv1.CreateTokenResponse, now time.Time) error {
	t := m.GetToken()
	what := strings.ToLower(enumWord(t.GetRole())) + " token"
	if t.GetKind() == quarryv1.TokenKind_TOKEN_KIND_JOIN {
		what = "join token"
		if t.GetSingleUse() {
			what = "single-use join token"
		}
		if t.GetNodeName() != "" {
			what += " for node " + t.GetNodeName()
		}
	}
	if t.GetName() != "" {
		what += " " + t.GetName()
	}
	expires := "never expires"
	if e := localTime(t.GetExpiresAt()); !e.IsZero() {
		expires = "expires " + e.Format(time.DateTime) + " (" + ago(e, now) + ")"
	}
	fmt.Fprintf(w, "created %s (id %s); it %s\n", what, t.GetId(), expires)
	fmt.Fprintf(w, "The secret is shown only now:\n\n  %s\n\n", m.GetSecret())
	if t.GetKind() != quarryv1.TokenKind_TOKEN_KIND_JOIN {
		fmt.Fprintf(w, "Use it with: export QUARRY_TOKEN=%s\n", m.GetSecret())
		return nil
	}
	caHash := m.GetCaHash()
	if caHash == "" {
		caHash = "<CA hash>"
	}
	node := "NODE"
	if t.GetNodeName() != "" {
		node = t.GetNodeName()
	}
	fmt.Fprintf(w, "On the new node, run:\n\n  quarry agent --server %s --join-token %s --ca-hash %s --name %s\n\n", base, m.GetSecret(), caHash, node)
	if loopbackURL(base) {
		fmt.Fprintf(w, "(%s is this host's loopback address: give the address the node reaches the control plane at.)\n", base)
	}
	return nil
}

func loopbackURL(base string) bool {
	u, err := url.Parse(base)
	if err != nil {
		return false
	}
	if u.Hostname() == "localhost" {
		return true
	}
	ip := net.ParseIP(u.Hostname())
	return ip != nil && ip.IsLoopback()
}

func newTokenListCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List tokens (never their secrets)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			resp, err := c.tokens.ListTokens(cmd.Context(), connect.NewRequest(&quarryv1.ListTokensRequest{}))
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.wantJSON() {
				return printJSONList(out, resp.Msg.GetTokens())
			}
			now := time.Now()
			t := newTable(out, "ID", "NAME", "KIND", "ROLE", "STATE", "CREATED", "EXPIRES", "LAST USED")
			for _, tok := range resp.Msg.GetTokens() {
				role := ""
				switch {
				case tok.GetKind() != quarryv1.TokenKind_TOKEN_KIND_JOIN:
					role = strings.ToLower(enumWord(tok.GetRole()))
				case tok.GetNodeName() != "":
					role = "node " + tok.GetNodeName()
				}
				expires := "never"
				if e := localTime(tok.GetExpiresAt()); !e.IsZero() {
					expires = ago(e, now)
				}
				t.row(tok.GetId(), tok.GetName(), strings.ToLower(enumWord(tok.GetKind())), role, tokenState(tok, now),
					ago(localTime(tok.GetCreatedAt()), now), expires, ago(localTime(tok.GetLastUsedAt()), now))
			}
			return t.flush()
		},
	}
}

// tokenState says whether a token still works, and if not why.
func tokenState(t *quarryv1.Token, now time.Time) string {
	switch {
	case t.GetRevokedAt() != nil:
		return "revoked"
	case t.GetExpiresAt() != nil && !now.Before(t.GetExpiresAt().AsTime()):
		return "expired"
	case t.GetSingleUse() && t.GetUseCount() > 0:
		return "used"
	}
	return "active"
}

func newTokenRevokeCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID|NAME",
		Short: "Revoke a token: it is refused from now on, and its dashboard sessions end",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			tok, err := resolveToken(ctx, c.tokens, args[0])
			if err != nil {
				return err
			}
			if tok.GetRevokedAt() != nil {
				return errclass.New(errclass.FailedPrecondition, "token %s was revoked already, at %s", tok.GetId(), localTime(tok.GetRevokedAt()).Format(time.DateTime))
			}
			resp, err := c.tokens.RevokeToken(ctx, connect.NewRequest(&quarryv1.RevokeTokenRequest{Id: tok.GetId()}))
			if err != nil {
				return err
			}
			if g.wantJSON() {
				return printJSON(cmd.OutOrStdout(), resp.Msg)
			}
			t := resp.Msg.GetToken()
			name := t.GetId()
			if t.GetName() != "" {
				name = t.GetName() + " (id " + t.GetId() + ")"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked token %s\n", name)
			return nil
		},
	}
}

// resolveToken returns the token ref names or identifies.
func resolveToken(ctx context.Context, c quarryv1connect.TokenServiceClient, ref string) (*quarryv1.Token, error) {
	resp, err := c.ListTokens(ctx, connect.NewRequest(&quarryv1.ListTokensRequest{}))
	if err != nil {
		return nil, err
	}
	return pick(resp.Msg.GetTokens(), ref, "token", (*quarryv1.Token).GetId, (*quarryv1.Token).GetName)
}
