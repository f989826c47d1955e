package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/quarry-project/quarry/internal/auth"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
	"github.com/quarry-project/quarry/internal/store"
)

// AuditService implements quarry.v1.AuditService.
type AuditService struct {
	quarryv1connect.UnimplementedAuditServiceHandler
	Store  store.Store
	Logger *slog.Logger
}

func (s *AuditService) ListAudit(ctx context.Context, req *connect.Request[quarryv1.ListAuditRequest]) (*connect.Response[quarryv1.ListAuditResponse], error) {
	m := req.Msg
	p := pageOf(m)
	if p.Size == 0 {
		// limit, the older spelling, was cut to the maximum rather than
		// refused; old clients keep that.
		p.Size = min(int(m.GetLimit()), store.MaxPageSize)
	}
	if m.GetBeforeId() < 0 {
		return nil, toConnect(ctx, s.Logger, invalidf("before_id %d is negative", m.GetBeforeId()))
	}
	f := store.AuditFilter{Search: m.GetSearch(), Result: m.GetResult(), BeforeID: m.GetBeforeId()}
	entries, next, err := s.Store.ListAuditPage(ctx, f, p)
	if err != nil {
		return nil, toConnect(ctx, s.Logger, err)
	}
	resp := &quarryv1.ListAuditResponse{NextPageToken: next}
	for _, e := range entries {
		resp.Entries = append(resp.Entries, &quarryv1.AuditEntry{
			Id:         e.ID,
			Time:       ts(e.Time),
			Actor:      e.Actor,
			Role:       roleToProto(e.Role),
			Procedure:  e.Procedure,
			Target:     e.Target,
			Result:     e.Result,
			Message:    e.Message,
			RemoteAddr: e.RemoteAddr,
		})
	}
	return connect.NewResponse(resp), nil
}

// auditCall is what the audit log learns of one call.
type auditCall struct {
	proc     string
	rule     auth.Rule
	caller   Caller
	peer     string
	req      any // request message; nil for streams
	resp     any // response message; nil on error
	err      error
	panicked bool
}

// maxAuditField bounds what a request can write into one audit field.
const maxAuditField = 256

// audit appends c to the audit log. It outlives the call's context, so a
// client that hangs up cannot skip it; a store that refuses it is logged
// at error, the one thing left to do once the call has happened.
func (a *Auth) audit(ctx context.Context, c auditCall) {
	e := store.AuditEntry{
		Time:       a.Now(),
		Actor:      c.caller.Actor(),
		Role:       c.caller.Role,
		Procedure:  strings.TrimPrefix(c.proc, "/"),
		Target:     clip(targetOf(c.req, c.resp)),
		Result:     "ok",
		RemoteAddr: c.peer,
	}
	if c.rule.Public && e.Actor == "" {
		// Enrollment: the agent names itself; the join token vouches.
		if n := stringField(c.req, "node_name"); n != "" {
			e.Actor = clip("agent " + n)
		}
	}
	switch {
	case c.panicked:
		e.Result, e.Message = connect.CodeInternal.String(), "the handler panicked; the control plane's log has the details"
	case c.err != nil:
		e.Result, e.Message = connect.CodeOf(c.err).String(), c.err.Error()
		var ce *connect.Error
		if errors.As(c.err, &ce) {
			e.Message = ce.Message()
		}
	}
	if note, ok := ctx.Value(auditNoteKey{}).(*string); ok && e.Result == "ok" {
		e.Message = *note
	}
	e.Message = clip(e.Message)
	a.write(ctx, e)
}

type auditNoteKey struct{}

// withAuditNote gives a call a note its handler may fill (noteAudit) for
// the message of its audit entry when it succeeds.
func withAuditNote(ctx context.Context) context.Context {
	return context.WithValue(ctx, auditNoteKey{}, new(string))
}

// noteAudit sets the message of the audit entry of the call ctx belongs
// to, if it succeeds: what about it a reader of the log must know.
func noteAudit(ctx context.Context, format string, args ...any) {
	if note, ok := ctx.Value(auditNoteKey{}).(*string); ok {
		*note = fmt.Sprintf(format, args...)
	}
}

func (a *Auth) write(ctx context.Context, e store.AuditEntry) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := a.Store.AppendAudit(ctx, e); err != nil {
		a.Logger.ErrorContext(ctx, "writing the audit log", "err", err, "procedure", e.Procedure,
			"actor", e.Actor, "target", e.Target, "result", e.Result)
	}
}

// targetFields name the object a request acts on, most specific first.
var targetFields = []protoreflect.Name{"id", "name", "node_name", "storage_pool_id", "catalog_id", "url"}

// targetOf is the object a call acted on as its request names it, with the
// id the response gave it when the request named it otherwise ("n1
// (node-3f2a9c1b7d4e)"), so that a create and a later delete line up.
func targetOf(req, resp any) string {
	var target string
	for _, f := range targetFields {
		if target = stringField(req, f); target != "" {
			break
		}
	}
	if id := responseID(resp); id != "" && id != target {
		if target == "" {
			return id
		}
		return target + " (" + id + ")"
	}
	return target
}

// responseID finds the id of what a call created: a top-level id or
// node_id, or the id of a top-level message field.
func responseID(resp any) string {
	m, ok := resp.(proto.Message)
	if !ok || m == nil {
		return ""
	}
	for _, f := range []protoreflect.Name{"id", "node_id"} {
		if id := stringField(m, f); id != "" {
			return id
		}
	}
	r := m.ProtoReflect()
	fields := r.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() && r.Has(fd) {
			if id := stringField(r.Get(fd).Message().Interface(), "id"); id != "" {
				return id
			}
		}
	}
	return ""
}

// stringField returns the string field name of message m, or "".
func stringField(m any, name protoreflect.Name) string {
	pm, ok := m.(proto.Message)
	if !ok || pm == nil {
		return ""
	}
	r := pm.ProtoReflect()
	fd := r.Descriptor().Fields().ByName(name)
	if fd == nil || fd.Kind() != protoreflect.StringKind || fd.IsList() || fd.IsMap() {
		return ""
	}
	return r.Get(fd).String()
}

func clip(s string) string {
	if len(s) <= maxAuditField {
		return s
	}
	cut := maxAuditField
	for cut > 0 && !utf8Start(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }
