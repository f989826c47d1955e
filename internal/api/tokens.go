package api

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/auth"
	"github.com/quarry-project/quarry/internal/errclass"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
	"github.com/quarry-project/quarry/internal/names"
	"github.com/quarry-project/quarry/internal/store"
)

// defaultJoinTTL is how long a join token lasts when no TTL is given.
const defaultJoinTTL = time.Hour

// TokenService implements quarry.v1.TokenService.
type TokenService struct {
	quarryv1connect.UnimplementedTokenServiceHandler
	Store  store.Store
	Logger *slog.Logger
	Now    func() time.Time
	// CAHash returns the pin of the control plane's CA ("sha256:<hex>")
	// that join tokens are handed out with; nil while there is no CA.
	CAHash func() string
}

func (s *TokenService) CreateToken(ctx context.Context, req *connect.Request[quarryv1.CreateTokenRequest]) (*connect.Response[quarryv1.CreateTokenResponse], error) {
	m := req.Msg
	kind := store.TokenAPI
	switch m.GetKind() {
	case quarryv1.TokenKind_TOKEN_KIND_UNSPECIFIED, quarryv1.TokenKind_TOKEN_KIND_API:
	case quarryv1.TokenKind_TOKEN_KIND_JOIN:
		kind = store.TokenJoin
	case quarryv1.TokenKind_TOKEN_KIND_SSO:
		return nil, toConnect(ctx, s.Logger, invalidf("SSO tokens are made by signing in to the dashboard with single sign-on, not created; create a TOKEN_KIND_API token with a role instead"))
	default:
		return nil, toConnect(ctx, s.Logger, invalidf("token kind %d is unknown; use TOKEN_KIND_API or TOKEN_KIND_JOIN", m.GetKind()))
	}
	if m.GetName() != "" {
		if err := names.Check("token", m.GetName()); err != nil {
			return nil, toConnect(ctx, s.Logger, invalidf("%s", err.Error()))
		}
	}
	if m.GetTtlSeconds() < 0 {
		return nil, toConnect(ctx, s.Logger, invalidf("ttl_seconds %d is negative; give a lifetime in seconds, or 0 for the default", m.GetTtlSeconds()))
	}
	if t := m.GetTtlSeconds(); t > 0 && t < 60 {
		return nil, toConnect(ctx, s.Logger, invalidf("ttl_seconds %d is less than a minute, too short to use the token; give at least 60, or 0 for the default", t))
	}
	const maxTTL = 100 * 365 * 24 * 60 * 60 // keeps the expiry a representable time
	if m.GetTtlSeconds() > maxTTL {
		return nil, toConnect(ctx, s.Logger, invalidf("ttl_seconds %d is more than 100 years; give 0 for a token that never expires", m.GetTtlSeconds()))
	}
	ttl := time.Duration(m.GetTtlSeconds()) * time.Second
	var role store.Role
	if kind == store.TokenAPI {
		var ok bool
		if role, ok = roleFromProto(m.GetRole()); !ok {
			return nil, toConnect(ctx, s.Logger, invalidf("an API token needs a role: ROLE_VIEWER (read), ROLE_OPERATOR (images, scans, jobs) or ROLE_ADMIN (nodes, pools, tokens)"))
		}
		if m.GetSingleUse() {
			return nil, toConnect(ctx, s.Logger, invalidf("single_use applies to join tokens only; give an API token a TTL instead"))
		}
	} else if ttl == 0 {
		ttl = defaultJoinTTL
	}
	if n := m.GetNodeName(); n != "" {
		if kind != store.TokenJoin {
			return nil, toConnect(ctx, s.Logger, invalidf("node_name binds join tokens only; an API token acts for a person or a program, not a node"))
		}
		if err := names.Check("node", n); err != nil {
			return nil, toConnect(ctx, s.Logger, invalidf("%s", err.Error()))
		}
	}

	now := s.Now()
	t, secret := auth.New(kind)
	t.Name, t.Role, t.CreatedAt, t.SingleUse, t.NodeName = m.GetName(), role, now, m.GetSingleUse(), m.GetNodeName()
	if ttl > 0 {
		t.ExpiresAt = now.Add(ttl)
	}
	if err := s.Store.CreateToken(ctx, t); err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	resp := &quarryv1.CreateTokenResponse{Token: tokenView(t), Secret: secret}
	if kind == store.TokenJoin && s.CAHash != nil {
		resp.CaHash = s.CAHash()
	}
	return connect.NewResponse(resp), nil
}

func (s *TokenService) ListTokens(ctx context.Context, _ *connect.Request[quarryv1.ListTokensRequest]) (*connect.Response[quarryv1.ListTokensResponse], error) {
	tokens, err := s.Store.ListTokens(ctx)
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	resp := &quarryv1.ListTokensResponse{}
	for _, t := range tokens {
		resp.Tokens = append(resp.Tokens, tokenView(t))
	}
	return connect.NewResponse(resp), nil
}

func (s *TokenService) RevokeToken(ctx context.Context, req *connect.Request[quarryv1.RevokeTokenRequest]) (*connect.Response[quarryv1.RevokeTokenResponse], error) {
	id := req.Msg.GetId()
	if strings.TrimSpace(id) == "" {
		return nil, toConnect(ctx, s.Logger, invalidf("token id is empty; see quarry token ls"))
	}
	t, err := s.Store.GetToken(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		err = errclass.New(store.ErrNotFound, "no token has id %q; see quarry token ls", id)
	}
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	now := s.Now()
	if t.RevokedAt.IsZero() {
		if err := s.checkNotLastAdmin(ctx, t, now); err != nil {
			return nil, toConnect(ctx, s.Logger, err)
		}
		if err := s.Store.RevokeToken(ctx, id, now); err != nil {
			return nil, toConnect(ctx, s.Logger, err)
		}
		if t, err = s.Store.GetToken(ctx, id); err != nil {
			return nil, toConnect(ctx, s.Logger, err)
		}
	}
	return connect.NewResponse(&quarryv1.RevokeTokenResponse{Token: tokenView(t)}), nil
}

// checkNotLastAdmin refuses to revoke the last usable admin token: nobody
// could manage tokens, nodes or pools any more.
func (s *TokenService) checkNotLastAdmin(ctx context.Context, t store.Token, now time.Time) error {
	if t.Kind != store.TokenAPI || t.Role != store.RoleAdmin || auth.Usable(t, now) != nil {
		return nil
	}
	tokens, err := s.Store.ListTokens(ctx)
	if err != nil {
		return err
	}
	for _, o := range tokens {
		if o.ID != t.ID && o.Kind == store.TokenAPI && o.Role == store.RoleAdmin && auth.Usable(o, now) == nil {
			return nil
		}
	}
	return errclass.New(store.ErrInUse, "token %s is the last admin token; create another first (quarry token create --role admin), then revoke this one", t.ID)
}

func tokenView(t store.Token) *quarryv1.Token {
	v := &quarryv1.Token{
		Id:         t.ID,
		Name:       t.Name,
		Kind:       quarryv1.TokenKind_TOKEN_KIND_API,
		Role:       roleToProto(t.Role),
		CreatedAt:  ts(t.CreatedAt),
		ExpiresAt:  ts(t.ExpiresAt),
		RevokedAt:  ts(t.RevokedAt),
		SingleUse:  t.SingleUse,
		LastUsedAt: ts(t.LastUsedAt),
		UseCount:   uint32(max(t.UseCount, 0)),
		NodeName:   t.NodeName,
	}
	switch t.Kind {
	case store.TokenJoin:
		v.Kind = quarryv1.TokenKind_TOKEN_KIND_JOIN
	case store.TokenSSO:
		v.Kind = quarryv1.TokenKind_TOKEN_KIND_SSO
	}
	return v
}

var roles = map[store.Role]quarryv1.Role{
	store.RoleViewer:   quarryv1.Role_ROLE_VIEWER,
	store.RoleOperator: quarryv1.Role_ROLE_OPERATOR,
	store.RoleAdmin:    quarryv1.Role_ROLE_ADMIN,
}

func roleToProto(r store.Role) quarryv1.Role { return roles[r] }

func roleFromProto(r quarryv1.Role) (store.Role, bool) {
	for k, v := range roles {
		if v == r {
			return k, true
		}
	}
	return "", false
}
