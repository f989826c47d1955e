package download

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/quarry-project/quarry/internal/checksum"
	"github.com/quarry-project/quarry/internal/errclass"
	agentv1 "github.com/quarry-project/quarry/internal/gen/quarry/agent/v1"
	"github.com/quarry-project/quarry/internal/pki"
	"github.com/quarry-project/quarry/internal/store"
)

// Job kinds this controller runs. A copy job (ImageService/CopyImage, or
// a download whose expected digest the cluster already holds) has the
// digest of its source in Checksum and "image:<id>" or the download's
// source in Source; it runs like a download whose origin is a node that
// holds the file.
const (
	KindDownload = "download"
	KindCopy     = "copy"
)

// CopySource is the Source of a copy job made by CopyImage: one copy of
// an image under one name into a pool runs at a time.
func CopySource(imageID, name string) string { return "image:" + imageID + "/" + name }

// errNoSource classes the error of a copy none of whose sources can be
// read now.
var errNoSource = errclass.New(errclass.Unavailable, "waiting for a source")

// errCannotCopy classes the error of a copy that can never be done: the
// job fails at once.
var errCannotCopy = errclass.New(errclass.FailedPrecondition, "the copy cannot be done")

func cannotCopy(err error) bool { return errors.Is(err, errCannotCopy) }

// copyPlan is where a job's bytes come from when they come from the
// cluster.
type copyPlan struct {
	from     store.Image
	fromPool store.Pool
	// node serves the file; the writing node itself for a local copy.
	node  store.Node
	local bool
	// why the job copies, for a download (its history says it).
	why string
}

func (p *copyPlan) same(o *copyPlan) bool {
	return o != nil && p.from.ID == o.from.ID && p.node.ID == o.node.ID && p.local == o.local
}

// describe says where the copy comes from, for the job's history.
func (p *copyPlan) describe(target store.Node) string {
	if p.local {
		return fmt.Sprintf("copying image %s of pool %s locally on node %s", p.from.Name, p.fromPool.Name, target.Name)
	}
	return fmt.Sprintf("copying image %s of pool %s from node %s to node %s over mutual TLS (a one-file grant signed by the control plane)",
		p.from.Name, p.fromPool.Name, p.node.Name, target.Name)
}

// expectedSHA256 is the hex SHA-256 job j must end with, when known: its
// checksum, or, for a download with a checksum file that has not begun,
// the digest the file gives (looked up through node n, once per job).
func (c *Controller) expectedSHA256(ctx context.Context, j store.Job, n store.Node) string {
	if d, err := checksum.ParseDigest(j.Checksum); err == nil {
		if d.Algo == checksum.SHA256 {
			return d.Hex
		}
		return ""
	}
	if j.Kind == KindCopy || j.ChecksumURL == "" || j.BytesDone > 0 || c.cfg.Lookup == nil {
		return ""
	}
	c.mu.Lock()
	hex, ok := c.resolved[j.ID]
	c.mu.Unlock()
	if ok {
		return hex
	}
	lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	u, err := url.Parse(j.URL)
	if err != nil {
		return ""
	}
	name := path.Base(u.Path)
	digest, err := c.cfg.Lookup(lctx, n.ID, &agentv1.LookupChecksumRequest{ChecksumUrl: j.ChecksumURL, FileName: name, Policy: c.cfg.Policy})
	if err != nil {
		// The download looks it up again and reports what is wrong.
		c.log.Info("looking up the checksum file before a download", "job", j.ID, "err", err)
		return ""
	}
	if d, err := checksum.ParseDigest(digest); err == nil && d.Algo == checksum.SHA256 {
		hex = d.Hex
	}
	c.mu.Lock()
	c.resolved[j.ID] = hex
	c.mu.Unlock()
	return hex
}

// sources are the READY images with the given SHA-256, other than the
// job's own; the copy's named source first.
func (c *Controller) sources(ctx context.Context, j store.Job, sha string) ([]store.Image, error) {
	ims, err := c.cfg.Store.ListImages(ctx, store.ImageFilter{})
	if err != nil {
		return nil, err
	}
	named, _, _ := strings.Cut(strings.TrimPrefix(j.Source, "image:"), "/")
	ims = slices.DeleteFunc(ims, func(im store.Image) bool {
		return im.State != store.ImageReady || im.SHA256 != sha || im.ID == j.ImageID
	})
	slices.SortStableFunc(ims, func(a, b store.Image) int {
		return cmp.Compare(boolRank(a.ID != named), boolRank(b.ID != named))
	})
	return ims, nil
}

func boolRank(b bool) int {
	if b {
		return 1
	}
	return 0
}

// planFor decides where job j's bytes come from when node n writes them:
// nil for the origin (a download), otherwise a node holding the file. A
// copy prefers a source in a pool n mounts (a local copy), then other
// nodes, the one it read from last time last (it may be the one that
// failed). A job with a URL (a download, or a download served by a copy)
// whose sources are all gone or unreachable downloads the URL; a copy
// without one waits for a source (errNoSource) or, when none is left in
// the library, fails (errCannotCopy).
func (c *Controller) planFor(ctx context.Context, j store.Job, n store.Node) (*copyPlan, error) {
	sha := c.expectedSHA256(ctx, j, n)
	if sha == "" || (j.Kind != KindCopy && j.BytesDone > 0) {
		if j.Kind == KindCopy && j.URL == "" {
			return nil, fmt.Errorf("%w: it has no SHA-256 digest to copy by", errCannotCopy)
		}
		return nil, nil
	}
	ims, err := c.sources(ctx, j, sha)
	if err != nil {
		return nil, err
	}
	if len(ims) == 0 {
		if j.Kind == KindCopy && j.URL == "" {
			return nil, fmt.Errorf("%w: no READY image with sha256:%s is left in the cluster to copy from; copy another image or download it", errCannotCopy, sha)
		}
		return nil, nil
	}
	c.mu.Lock()
	last := c.plans[j.ID]
	c.mu.Unlock()
	var peers []*copyPlan
	var why []string
	for _, im := range ims {
		pool, err := c.cfg.Store.GetPool(ctx, im.PoolID)
		if err != nil {
			continue
		}
		choice, err := c.cfg.Chooser.Choose(ctx, im.PoolID)
		if err != nil {
			why = append(why, fmt.Sprintf("image %s in pool %s: %v", im.Name, pool.Name, err))
			continue
		}
		for _, cand := range choice.Kept {
			p := &copyPlan{from: im, fromPool: pool, node: cand.Node, local: cand.Node.ID == n.ID}
			if p.local {
				return p, nil
			}
			peers = append(peers, p)
		}
	}
	if len(peers) == 0 {
		if j.URL != "" {
			return nil, nil // the origin, then
		}
		return nil, fmt.Errorf("%w: no node holding sha256:%s can serve it now (%s); the copy goes on when one is back",
			errNoSource, sha, strings.Join(why, "; "))
	}
	if last != nil && len(peers) > 1 {
		// The last source goes last: an attempt that failed on it moves
		// to another one (the same ETag on every node lets it resume).
		slices.SortStableFunc(peers, func(a, b *copyPlan) int {
			return cmp.Compare(boolRank(a.node.ID == last.node.ID), boolRank(b.node.ID == last.node.ID))
		})
	}
	return peers[0], nil
}

// holders are the nodes that mount a pool holding a READY image with the
// job's digest: a copy placed on one of them is a local copy.
func (c *Controller) holders(ctx context.Context, j store.Job) map[string]bool {
	if j.Kind != KindCopy {
		return nil
	}
	d, err := checksum.ParseDigest(j.Checksum)
	if err != nil {
		return nil
	}
	ims, err := c.sources(ctx, j, d.Hex)
	if err != nil {
		return nil
	}
	out := map[string]bool{}
	for _, im := range ims {
		if choice, err := c.cfg.Chooser.Choose(ctx, im.PoolID); err == nil {
			for _, cand := range choice.Kept {
				out[cand.Node.ID] = true
			}
		}
	}
	return out
}

// preferHolders moves the nodes that hold the copy's source to the front.
func preferHolders(nodes []store.Node, holders map[string]bool) {
	if len(holders) == 0 {
		return
	}
	slices.SortStableFunc(nodes, func(a, b store.Node) int {
		return cmp.Compare(boolRank(!holders[a.ID]), boolRank(!holders[b.ID]))
	})
}

// applyPlan points req at the plan's source: a file of a pool the node
// mounts, or the serving node's peer endpoint with a fresh grant.
func (c *Controller) applyPlan(req *agentv1.StartDownloadRequest, j store.Job, n store.Node, p *copyPlan) error {
	req.Checksum, req.ChecksumUrl, req.Url = "sha256:"+p.from.SHA256, "", ""
	ref := &agentv1.PoolRef{Id: p.fromPool.ID, Name: p.fromPool.Name, Path: p.fromPool.Path}
	if p.local {
		req.Local = &agentv1.LocalSource{Pool: ref, RelPath: p.from.RelPath}
		return nil
	}
	if c.cfg.Grants == nil {
		return errclass.New(errclass.FailedPrecondition, "this control plane cannot sign peer grants")
	}
	now := c.cfg.Now()
	grant, err := c.cfg.Grants(pki.Grant{
		Source: p.node.ID, Grantee: n.ID, Job: j.ID,
		PoolID: p.fromPool.ID, PoolName: p.fromPool.Name, PoolPath: p.fromPool.Path,
		Path: p.from.RelPath, Size: p.from.SizeBytes, SHA256: p.from.SHA256,
		IssuedAt: now, Expires: now.Add(c.cfg.GrantTTL),
	})
	if err != nil {
		return err
	}
	req.Peer = &agentv1.PeerSource{NodeId: p.node.ID, Address: p.node.Address, Grant: grant}
	return nil
}

// remember records the plan a job started with and returns the history
// line for it, or "" when it did not change.
func (c *Controller) remember(j store.Job, n store.Node, p *copyPlan) string {
	c.mu.Lock()
	last := c.plans[j.ID]
	if p == nil {
		delete(c.plans, j.ID)
	} else {
		c.plans[j.ID] = p
	}
	c.mu.Unlock()
	switch {
	case p == nil && j.Kind == KindCopy && last == nil:
		return fmt.Sprintf("no node can serve a copy of the file now (or none is left in the cluster); downloading %s instead", j.URL)
	case p == nil || p.same(last):
		return ""
	case last == nil && !strings.HasPrefix(j.Source, "image:"):
		// A download served by a copy: say why, once.
		return fmt.Sprintf("the expected digest sha256:%s is already in the cluster (image %s in pool %s): %s instead of downloading %s, which is never fetched",
			p.from.SHA256, p.from.Name, p.fromPool.Name, p.describe(n), j.URL)
	}
	return p.describe(n)
}

// planOf is the plan job id runs with, nil when it downloads.
func (c *Controller) planOf(id string) *copyPlan {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.plans[id]
}

// copied is the message of a finished copy.
func copied(p *copyPlan, n store.Node, st *agentv1.DownloadStatus) string {
	if p == nil {
		return fmt.Sprintf("copied on node %s and verified: sha256:%s", n.Name, st.GetSha256())
	}
	how := fmt.Sprintf("from node %s over mutual TLS", p.node.Name)
	if p.local {
		how = "locally"
		if m := st.GetCopyMethod(); m != "" {
			how += " with " + m
		}
	}
	return fmt.Sprintf("copied from image %s of pool %s to node %s %s and verified: sha256:%s", p.from.Name, p.fromPool.Name, n.Name, how, st.GetSha256())
}

// isNoSource reports a copy waiting for a source to come back.
func isNoSource(err error) bool { return errors.Is(err, errNoSource) }
