package agent

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"connectrpc.com/connect"

	"github.com/quarry-project/quarry/internal/errclass"
	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/agent/v1/agentv1connect"
	"github.com/quarry-project/quarry/internal/pki"
)

// service implements AgentService: it validates requests, asks the pool
// layer and converts the answer.
type service struct {
	agentv1connect.UnimplementedAgentServiceHandler
	a *Agent
}

func (s *service) GetFacts(ctx context.Context, req *connect.Request[agentv1.GetFactsRequest]) (*connect.Response[agentv1.GetFactsResponse], error) {
	refs := make([]poolRef, 0, len(req.Msg.GetPools()))
	for i, p := range req.Msg.GetPools() {
		ref, err := checkPoolRef(p.GetId(), p.GetName(), p.GetPath())
		if err != nil {
			return nil, errclass.ToConnect(fmt.Errorf("pools[%d]: %w", i, err))
		}
		refs = append(refs, ref)
	}
	// TODO: bound the time spent per pool. A hung NFS mount blocks stat(2)
	// in the kernel, where no context reaches; doing it right needs per-pool
	// goroutines and a policy for ones that never return, which belongs
	// with nodelink's health-check timeouts.
	resp := &agentv1.GetFactsResponse{Hostname: s.a.hostname, Version: s.a.cfg.Version}
	if q, err := s.a.qemu.find(ctx); err == nil {
		resp.QemuImgVersion = q.Version
	}
	mounted := map[string]string{} // pool id → host directory
	for _, ref := range refs {
		if err := ctx.Err(); err != nil {
			return nil, errclass.ToConnect(err)
		}
		f := s.facts(ref)
		if f.GetMounted() {
			mounted[ref.id] = s.a.paths.resolve(ref.path)
		}
		resp.Pools = append(resp.Pools, f)
	}
	// Every check names every pool the node may work on: the pools to
	// watch are those of the last one.
	watched := s.a.isos.sync(mounted)
	if c := req.Msg.GetEvents(); c != nil {
		resp.Events, resp.EventsCursor, resp.MoreEvents = s.a.isos.log.since(c, watched)
	}
	return connect.NewResponse(resp), nil
}

func (s *service) InitPool(ctx context.Context, req *connect.Request[agentv1.InitPoolRequest]) (*connect.Response[agentv1.InitPoolResponse], error) {
	p := req.Msg.GetPool()
	if p == nil {
		return nil, errclass.ToConnect(errclass.New(errclass.InvalidArgument, "pool is missing"))
	}
	ref, err := checkPoolRef(p.GetId(), p.GetName(), p.GetPath())
	if err != nil {
		return nil, errclass.ToConnect(err)
	}
	dir := s.a.paths.resolve(ref.path)
	if why := s.a.refusal(ref, dir); why != "" {
		return nil, errclass.ToConnect(errclass.New(errclass.FailedPrecondition, "%s", why))
	}
	if err := initPool(ref, dir, s.a.hostname, s.a.now()); err != nil {
		return nil, errclass.ToConnect(err)
	}
	s.a.log.Info("pool initialized", "pool", ref.id, "name", ref.name, "path", ref.path, "dir", dir)
	return connect.NewResponse(&agentv1.InitPoolResponse{Pool: s.facts(ref)}), nil
}

func (s *service) CreateCSR(_ context.Context, _ *connect.Request[agentv1.CreateCSRRequest]) (*connect.Response[agentv1.CreateCSRResponse], error) {
	csr, err := s.a.createCSR()
	if err != nil {
		return nil, errclass.ToConnect(err)
	}
	return connect.NewResponse(&agentv1.CreateCSRResponse{CsrPem: string(csr)}), nil
}

func (s *service) InstallCertificate(_ context.Context, req *connect.Request[agentv1.InstallCertificateRequest]) (*connect.Response[agentv1.InstallCertificateResponse], error) {
	cert, err := s.a.installCertificate([]byte(req.Msg.GetCertificatePem()))
	if err != nil {
		return nil, errclass.ToConnect(err)
	}
	s.a.log.Info("certificate renewed", "node", pki.NodeID(cert), "serial", pki.Serial(cert),
		"expires", cert.NotAfter.UTC().Format(time.RFC3339))
	return connect.NewResponse(&agentv1.InstallCertificateResponse{}), nil
}

func (s *service) facts(ref poolRef) *agentv1.PoolFacts {
	dir := s.a.paths.resolve(ref.path)
	if why := s.a.refusal(ref, dir); why != "" {
		s.a.log.Warn("refusing a pool", "pool", ref.id, "path", ref.path, "dir", dir, "reason", why)
		return &agentv1.PoolFacts{Id: ref.id, Status: agentv1.MountStatus_MOUNT_STATUS_NOT_WRITABLE, Reason: why}
	}
	f := inspect(ref, dir)
	s.a.log.Debug("pool facts", "pool", ref.id, "path", ref.path, "dir", dir, "mounted", f.mounted, "reason", f.reason)
	return &agentv1.PoolFacts{
		Id:         ref.id,
		Mounted:    f.mounted,
		Status:     f.status,
		Reason:     f.reason,
		FreeBytes:  f.free,
		TotalBytes: f.total,
	}
}

// logRPCs logs every call at debug, and failures that are the agent's fault
// at error.
func logRPCs(log *slog.Logger) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			start := time.Now()
			resp, err := next(ctx, req)
			code := "ok"
			if err != nil {
				code = connect.CodeOf(err).String()
			}
			lvl := slog.LevelDebug
			if c := connect.CodeOf(err); err != nil && (c == connect.CodeInternal || c == connect.CodeUnknown) {
				lvl = slog.LevelError
			}
			log.Log(ctx, lvl, "rpc", "procedure", req.Spec().Procedure, "peer", req.Peer().Addr, "code", code, "duration", time.Since(start), "err", err)
			return resp, err
		}
	}
}
