package server

import (
	"context"
	"net/http"
	"time"

	"github.com/quarry-project/quarry/internal/catalog"
	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/nodelink"
	"github.com/quarry-project/quarry/internal/store"
	"github.com/quarry-project/quarry/internal/urlpolicy"
)

// agentDownloads adapts the node link to the download controller.
type agentDownloads struct{ link *nodelink.Link }

func (a agentDownloads) Start(ctx context.Context, nodeID string, req *agentv1.StartDownloadRequest) (*agentv1.DownloadStatus, error) {
	return a.link.StartDownload(ctx, nodeID, req)
}

func (a agentDownloads) Watch(ctx context.Context, nodeID, jobID string, f func(*agentv1.DownloadStatus)) error {
	return a.link.WatchDownload(ctx, nodeID, jobID, f)
}

func (a agentDownloads) Cancel(ctx context.Context, nodeID, jobID string, pool store.Pool) error {
	return a.link.CancelDownload(ctx, nodeID, jobID, pool)
}

func (a agentDownloads) LookupChecksum(ctx context.Context, nodeID string, req *agentv1.LookupChecksumRequest) (string, error) {
	return a.link.LookupChecksum(ctx, nodeID, req)
}

// downloadPolicy builds the URL policy from the configuration: the server
// checks URLs when a download is asked for, the agents when they dial.
func downloadPolicy(cfg Config) (*urlpolicy.Policy, *agentv1.URLPolicy, error) {
	p, err := urlpolicy.Parse(cfg.URLAllow, cfg.URLDeny)
	if err != nil {
		return nil, nil, err
	}
	p.AllowLoopback = cfg.AllowLoopbackURLs
	return p, &agentv1.URLPolicy{AllowLoopback: cfg.AllowLoopbackURLs, Allow: cfg.URLAllow, Deny: cfg.URLDeny}, nil
}

func loadCatalog(cfg Config) (*catalog.Catalog, error) {
	return catalog.Load(true, cfg.CatalogFiles...)
}

// catalogClient asks origins about catalog images (conditional HEADs and
// checksum files) under the download URL policy.
func catalogClient(p *urlpolicy.Policy) *http.Client {
	c := p.Client(nil)
	c.Timeout = time.Minute
	return c
}
