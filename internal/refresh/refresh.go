// Package refresh keeps the catalog images in the pools current: for every
// catalog entry present in a pool (an image downloaded from it), it asks
// upstream on a schedule, with conditional requests (If-None-Match,
// If-Modified-Since) and the entry's checksum file, whether a new build was
// published; when one was, it downloads it next to the old one (named with
// the build's date) through the ordinary download job, makes it the entry's
// current image in that pool once it is READY, and deletes the builds older
// than the last Keep that nothing else uses.
//
// A refresh that fails leaves the current image as it was and nothing of
// the new build behind (the download job removes its partial file; the
// controller removes the failed build's record), and its error is shown in
// the status until the next check succeeds.
//
// The controller runs on a reconcile.Queue keyed by entry and pool. A key is
// looked at when its check is due (the time is stored, so a restart neither
// checks early nor forgets a due check), when a download from the catalog
// ends (the events hub tells), and when an operator asks (Trigger). Nothing
// is polled.
package refresh

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/quarry-project/quarry/internal/catalog"
	"github.com/quarry-project/quarry/internal/errclass"
	"github.com/quarry-project/quarry/internal/events"
	"github.com/quarry-project/quarry/internal/poolfs"
	"github.com/quarry-project/quarry/internal/reconcile"
	"github.com/quarry-project/quarry/internal/store"
)

// Files removes old builds' files from their pools.
type Files interface {
	DeleteFile(ctx context.Context, pool store.Pool, relPath string) error
}

// Config configures a Controller.
type Config struct {
	Store   store.Store
	Catalog *catalog.Catalog
	// Interval is the time between two checks of an entry in a pool; zero
	// checks only when Trigger asks.
	Interval time.Duration
	// Keep is how many READY builds of an entry are kept per pool
	// (DefaultKeep).
	Keep int
	// Client asks upstream; it must follow the download URL policy.
	Client *http.Client
	// Enqueue hands a new download job to the download controller.
	Enqueue func(jobID string)
	Files   Files
	// Hub tells the controller when downloads end.
	Hub *events.Hub
	// CheckTimeout bounds one check of upstream (30 s).
	CheckTimeout time.Duration
	Logger       *slog.Logger
	Now          func() time.Time
}

// Controller reconciles the catalog entries present in pools.
type Controller struct {
	cfg   Config
	log   *slog.Logger
	queue *reconcile.Queue

	mu sync.Mutex
	// forced: keys an operator asked to check now.
	forced map[string]bool
}

// DefaultKeep is how many builds of an entry are kept per pool unless
// told otherwise.
const DefaultKeep = 2

// sweepKey asks for every entry present in a pool to be looked at.
const sweepKey = "*"

// New returns a Controller; Run starts it.
func New(cfg Config) *Controller {
	if cfg.Keep <= 0 {
		cfg.Keep = DefaultKeep
	}
	if cfg.CheckTimeout <= 0 {
		cfg.CheckTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Client == nil {
		cfg.Client = http.DefaultClient
	}
	c := &Controller{cfg: cfg, log: cfg.Logger.With("component", "catalog-refresh"), forced: map[string]bool{}}
	c.queue = reconcile.New(reconcile.Config{Name: "catalog-refresh", Reconcile: c.reconcile, Logger: cfg.Logger, Workers: 2})
	return c
}

// Interval is the time between two checks; zero: only when asked.
func (c *Controller) Interval() time.Duration { return c.cfg.Interval }

// Keep is how many builds are kept per entry and pool.
func (c *Controller) Keep() int { return c.cfg.Keep }

// Run looks at every entry present in a pool, then whenever one is due or
// something happened to it, until ctx is done. It returns once every
// goroutine it started has exited.
func (c *Controller) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { c.queue.Run(ctx) })
	if c.cfg.Hub != nil {
		sub := c.cfg.Hub.Subscribe()
		wg.Go(func() {
			defer sub.Close()
			for {
				select {
				case <-ctx.Done():
					return
				case ev := <-sub.C:
					c.heard(ev)
				}
			}
		})
	}
	c.queue.Add(sweepKey)
	wg.Wait()
}

// heard queues the entry and pool of a download from the catalog that
// ended: a refresh's new build, or a first download to start following.
func (c *Controller) heard(ev events.Event) {
	switch {
	case ev.Resource == events.Resync:
		c.queue.Add(sweepKey)
	case ev.Resource == events.Job && ev.Job != nil && !ev.Job.State.Active():
		if id, ok := strings.CutPrefix(ev.Job.Source, sourcePrefix); ok && ev.Job.Kind == "download" {
			c.queue.Add(key(id, ev.Job.PoolID))
		}
	}
}

// sourcePrefix starts the source of a job that downloads a catalog entry
// (the API's and the refresh's alike).
const sourcePrefix = "catalog:"

func key(catalogID, poolID string) string { return catalogID + "/" + poolID }

func splitKey(k string) (catalogID, poolID string) {
	catalogID, poolID, _ = strings.Cut(k, "/")
	return catalogID, poolID
}

// Trigger asks for a check now of one entry (catalogID) or every entry
// present in a pool (""), and returns their status from before it. An
// entry present in no pool is an error that says how to add one.
func (c *Controller) Trigger(ctx context.Context, catalogID string) ([]Status, error) {
	if catalogID != "" {
		if _, err := c.cfg.Catalog.Get(catalogID); err != nil {
			return nil, errclass.New(errclass.NotFound, "%s", err.Error())
		}
	}
	pairs, err := c.pairs(ctx)
	if err != nil {
		return nil, err
	}
	var keys []string
	for _, p := range pairs {
		if catalogID == "" || p.catalogID == catalogID {
			keys = append(keys, key(p.catalogID, p.poolID))
		}
	}
	if len(keys) == 0 {
		if catalogID == "" {
			return nil, nil
		}
		return nil, errclass.New(errclass.FailedPrecondition, "catalog entry %s is in no pool, so there is nothing to refresh; download it first (quarry image download --catalog %s --pool POOL)",
			catalogID, catalogID)
	}
	before, err := c.Status(ctx, catalogID)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	for _, k := range keys {
		c.forced[k] = true
	}
	c.mu.Unlock()
	for _, k := range keys {
		c.queue.Add(k)
	}
	return before, nil
}

type pair struct{ catalogID, poolID string }

// pairs lists the entries present in pools: those with refresh state, and
// those a finished download from the catalog put in a pool.
func (c *Controller) pairs(ctx context.Context) ([]pair, error) {
	seen := map[pair]bool{}
	var out []pair
	add := func(p pair) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	rows, err := c.cfg.Store.ListCatalogRefresh(ctx)
	if err != nil {
		return nil, err
	}
	for _, r := range rows {
		add(pair{r.CatalogID, r.PoolID})
	}
	jobs, err := c.cfg.Store.ListJobs(ctx, store.JobFilter{States: []store.JobState{store.JobSucceeded}})
	if err != nil {
		return nil, err
	}
	for _, j := range jobs {
		if id, ok := strings.CutPrefix(j.Source, sourcePrefix); ok && j.Kind == "download" {
			if _, err := c.cfg.Catalog.Get(id); err == nil {
				add(pair{id, j.PoolID})
			}
		}
	}
	slices.SortFunc(out, func(a, b pair) int { return strings.Compare(key(a.catalogID, a.poolID), key(b.catalogID, b.poolID)) })
	return out, nil
}

func (c *Controller) reconcile(ctx context.Context, k string) (reconcile.Result, error) {
	if k == sweepKey {
		pairs, err := c.pairs(ctx)
		if err != nil {
			return reconcile.Result{}, err
		}
		for _, p := range pairs {
			c.queue.Add(key(p.catalogID, p.poolID))
		}
		return reconcile.Result{}, nil
	}
	catalogID, poolID := splitKey(k)
	return c.reconcilePair(ctx, catalogID, poolID)
}

// takeForced reports and clears an operator's request to check k now.
func (c *Controller) takeForced(k string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.forced[k]
	delete(c.forced, k)
	return f
}

// reconcilePair moves one entry in one pool one step: it starts following
// it, settles a refresh download that ended, and checks upstream when due.
func (c *Controller) reconcilePair(ctx context.Context, catalogID, poolID string) (reconcile.Result, error) {
	k := key(catalogID, poolID)
	pool, err := c.cfg.Store.GetPool(ctx, poolID)
	if errors.Is(err, store.ErrNotFound) {
		// The pool was deleted (with its images): forget it.
		return reconcile.Result{}, c.cfg.Store.DeleteCatalogRefresh(ctx, catalogID, poolID)
	}
	if err != nil {
		return reconcile.Result{}, err
	}
	r, err := c.cfg.Store.GetCatalogRefresh(ctx, catalogID, poolID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if r, err = c.adopt(ctx, catalogID, pool); err != nil || r.CatalogID == "" {
			return reconcile.Result{}, err
		}
	case err != nil:
		return reconcile.Result{}, err
	}
	if r.JobID != "" {
		done, err := c.settle(ctx, &r, pool)
		if err != nil || !done {
			return reconcile.Result{}, err // the job's end queues the key again
		}
	}
	if ok, err := c.ensureCurrent(ctx, &r); err != nil || !ok {
		return reconcile.Result{}, err
	}
	entry, err := c.cfg.Catalog.Get(catalogID)
	if err != nil {
		r.Result, r.Error, r.NextCheckAt = "", "catalog entry "+catalogID+" is no longer in the catalog; its images are kept but not refreshed", time.Time{}
		return reconcile.Result{}, c.cfg.Store.PutCatalogRefresh(ctx, r)
	}
	now := c.cfg.Now()
	forced := c.takeForced(k)
	if !forced {
		switch {
		case c.cfg.Interval <= 0:
			return reconcile.Result{}, nil // only when asked
		case r.NextCheckAt.IsZero():
			// Followed while periodic checks were off.
			r.NextCheckAt = now.Add(c.cfg.Interval)
			return reconcile.Result{After: c.cfg.Interval}, c.save(ctx, r)
		}
		if wait := r.NextCheckAt.Sub(now); wait > 0 {
			return reconcile.Result{After: wait}, nil
		}
	}
	if err := c.check(ctx, &r, entry, pool); err != nil {
		return reconcile.Result{}, err
	}
	if c.cfg.Interval > 0 && r.JobID == "" {
		return reconcile.Result{After: r.NextCheckAt.Sub(c.cfg.Now())}, nil
	}
	return reconcile.Result{}, nil
}

// save stores the pair's state.
func (c *Controller) save(ctx context.Context, r store.CatalogRefresh) error {
	return c.cfg.Store.PutCatalogRefresh(ctx, r)
}

// adopt starts following an entry a download put in the pool: its newest
// READY image from the catalog becomes the current build. A zero result
// means there is none.
func (c *Controller) adopt(ctx context.Context, catalogID string, pool store.Pool) (store.CatalogRefresh, error) {
	jobs, err := c.cfg.Store.ListJobs(ctx, store.JobFilter{States: []store.JobState{store.JobSucceeded}, PoolID: pool.ID})
	if err != nil {
		return store.CatalogRefresh{}, err
	}
	var newest store.Image
	for _, j := range jobs {
		if j.Source != sourcePrefix+catalogID || j.Kind != "download" {
			continue
		}
		im, err := c.cfg.Store.GetImage(ctx, j.ImageID)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return store.CatalogRefresh{}, err
		}
		if im.State == store.ImageReady && im.CreatedAt.After(newest.CreatedAt) {
			newest = im
		}
	}
	if newest.ID == "" {
		return store.CatalogRefresh{}, nil
	}
	now := c.cfg.Now()
	b := store.CatalogBuild{ImageID: newest.ID, CatalogID: catalogID, PoolID: pool.ID,
		Build: buildLabel(newest.CreatedAt), BuiltAt: newest.CreatedAt, CreatedAt: newest.CreatedAt}
	if newest.SHA256 != "" {
		b.Digest = "sha256:" + newest.SHA256
	}
	if err := c.cfg.Store.PutCatalogBuild(ctx, b); err != nil {
		return store.CatalogRefresh{}, err
	}
	r := store.CatalogRefresh{CatalogID: catalogID, PoolID: pool.ID, CurrentImageID: newest.ID,
		Result: "following " + newest.Name + "; upstream not checked yet"}
	if c.cfg.Interval > 0 {
		r.NextCheckAt = now.Add(c.cfg.Interval)
	}
	if err := c.cfg.Store.PutCatalogRefresh(ctx, r); err != nil {
		return store.CatalogRefresh{}, err
	}
	c.log.Info("following a catalog image for refresh", "entry", catalogID, "pool", pool.Name, "image", newest.Name)
	return r, nil
}

// ensureCurrent makes sure r's current image is a READY build: when it
// was deleted, the newest READY build takes its place; when none is left,
// the entry is no longer present in the pool and its state goes (ok false).
func (c *Controller) ensureCurrent(ctx context.Context, r *store.CatalogRefresh) (ok bool, err error) {
	if im, err := c.cfg.Store.GetImage(ctx, r.CurrentImageID); err == nil && im.State == store.ImageReady {
		return true, nil
	} else if err != nil && !errors.Is(err, store.ErrNotFound) {
		return false, err
	}
	builds, err := c.cfg.Store.ListCatalogBuilds(ctx, r.CatalogID, r.PoolID)
	if err != nil {
		return false, err
	}
	for _, b := range builds {
		im, err := c.cfg.Store.GetImage(ctx, b.ImageID)
		if errors.Is(err, store.ErrNotFound) {
			if err := c.cfg.Store.DeleteCatalogBuild(ctx, b.ImageID); err != nil {
				return false, err
			}
			continue
		}
		if err != nil {
			return false, err
		}
		if im.State == store.ImageReady {
			if b.ImageID != r.CurrentImageID {
				r.CurrentImageID = b.ImageID
				if err := c.save(ctx, *r); err != nil {
					return false, err
				}
			}
			return true, nil
		}
	}
	if r.JobID != "" {
		return false, nil
	}
	// A MISSING image may come back; a pool without any image of the
	// entry forgets it (a new download from the catalog follows it again).
	for _, b := range builds {
		if im, err := c.cfg.Store.GetImage(ctx, b.ImageID); err == nil && im.State == store.ImageMissing {
			return false, nil
		}
	}
	c.log.Info("a catalog entry is no longer in a pool; its refresh state goes", "entry", r.CatalogID, "pool", r.PoolID)
	return false, c.cfg.Store.DeleteCatalogRefresh(ctx, r.CatalogID, r.PoolID)
}

// settle looks at the refresh download in flight: when it succeeded its
// build becomes current and old builds are pruned; when it failed its
// record goes and the current image stays. done is false while it runs.
func (c *Controller) settle(ctx context.Context, r *store.CatalogRefresh, pool store.Pool) (done bool, err error) {
	j, err := c.cfg.Store.GetJob(ctx, r.JobID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return false, err
	}
	if err == nil && j.State.Active() {
		return false, nil
	}
	im, imErr := c.cfg.Store.GetImage(ctx, j.ImageID)
	if imErr != nil && !errors.Is(imErr, store.ErrNotFound) {
		return false, imErr
	}
	build, _ := c.build(ctx, r, j.ImageID)
	switch {
	case err == nil && j.State == store.JobSucceeded && imErr == nil && im.State == store.ImageReady:
		old := r.CurrentImageID
		r.CurrentImageID, r.Error = im.ID, ""
		r.Result = fmt.Sprintf("new build %s downloaded as %s; it is the current image", build.Build, im.Name)
		r.JobID = ""
		c.log.Info("a new catalog build is the current image", "entry", r.CatalogID, "pool", pool.Name, "image", im.Name, "previous", old)
		// Pruned before the state is saved: whoever sees the refresh
		// finished sees the old builds gone too.
		c.prune(ctx, r, pool)
		if err := c.save(ctx, *r); err != nil {
			return false, err
		}
	default:
		why := "its download job is gone"
		if err == nil {
			why = fmt.Sprintf("job %s %s: %s", j.ID, strings.ToLower(string(j.State)), j.Message)
		}
		// Nothing of the new build stays: the download removed its
		// partial file; its record (ERROR, no file) goes too.
		if imErr == nil && im.State != store.ImageReady {
			if err := c.cfg.Store.DeleteImage(ctx, im.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
				return false, err
			}
		}
		if j.ImageID != "" && (imErr != nil || im.State != store.ImageReady) {
			if err := c.cfg.Store.DeleteCatalogBuild(ctx, j.ImageID); err != nil {
				return false, err
			}
		}
		cur := r.CurrentImageID
		if cim, err := c.cfg.Store.GetImage(ctx, cur); err == nil {
			cur = cim.Name
		}
		r.JobID = ""
		r.Error = fmt.Sprintf("downloading build %s failed (%s); the current image %s is unchanged, and the next check tries again", build.Build, why, cur)
		r.Result = ""
		if err := c.save(ctx, *r); err != nil {
			return false, err
		}
		c.log.Info("a catalog refresh failed; the current image stays", "entry", r.CatalogID, "pool", pool.Name, "why", why)
	}
	return true, nil
}

// build returns the build record of imageID.
func (c *Controller) build(ctx context.Context, r *store.CatalogRefresh, imageID string) (store.CatalogBuild, error) {
	builds, err := c.cfg.Store.ListCatalogBuilds(ctx, r.CatalogID, r.PoolID)
	if err != nil {
		return store.CatalogBuild{}, err
	}
	for _, b := range builds {
		if b.ImageID == imageID {
			return b, nil
		}
	}
	return store.CatalogBuild{}, store.ErrNotFound
}

// prune deletes the READY builds past the newest Keep (the current one is
// always kept) that no active job uses, and adds what it did to r.Result
// (the caller saves r). A build that cannot go now is tried again after
// the next refresh; the status says why.
func (c *Controller) prune(ctx context.Context, r *store.CatalogRefresh, pool store.Pool) {
	builds, err := c.cfg.Store.ListCatalogBuilds(ctx, r.CatalogID, r.PoolID)
	if err != nil {
		c.log.Warn("listing builds to prune", "entry", r.CatalogID, "pool", pool.Name, "err", err)
		return
	}
	active, err := c.cfg.Store.ListJobs(ctx, store.JobFilter{States: []store.JobState{store.JobQueued, store.JobRunning}, PoolID: pool.ID})
	if err != nil {
		c.log.Warn("listing jobs before pruning builds", "entry", r.CatalogID, "pool", pool.Name, "err", err)
		return
	}
	kept := 0
	var problems []string
	for _, b := range builds {
		im, err := c.cfg.Store.GetImage(ctx, b.ImageID)
		if err != nil || im.State != store.ImageReady {
			continue // only READY builds count; others are not ours to delete
		}
		if b.ImageID == r.CurrentImageID || kept < c.cfg.Keep-1 {
			if b.ImageID != r.CurrentImageID {
				kept++
			}
			continue
		}
		if i := slices.IndexFunc(active, func(j store.Job) bool { return j.ImageID == im.ID }); i >= 0 {
			problems = append(problems, fmt.Sprintf("old build %s is kept while job %s uses it", im.Name, active[i].ID))
			continue
		}
		if err := c.deleteBuild(ctx, im, pool); err != nil {
			problems = append(problems, fmt.Sprintf("deleting old build %s failed: %v", im.Name, err))
			continue
		}
		c.log.Info("deleted an old catalog build", "entry", r.CatalogID, "pool", pool.Name, "image", im.Name)
		r.Result += "; deleted old build " + im.Name
	}
	if len(problems) > 0 {
		r.Result += "; " + strings.Join(problems, "; ")
	}
}

// deleteBuild removes an old build's file through a node that mounts the
// pool, then its records; while it runs the image is DELETING, and if the
// file cannot be removed the image returns to READY.
func (c *Controller) deleteBuild(ctx context.Context, im store.Image, pool store.Pool) error {
	before := im
	im.State, im.UpdatedAt = store.ImageDeleting, c.cfg.Now()
	if err := c.cfg.Store.UpdateImage(ctx, im); err != nil {
		return err
	}
	if err := c.cfg.Files.DeleteFile(ctx, pool, im.RelPath); err != nil {
		before.UpdatedAt = c.cfg.Now()
		if uerr := c.cfg.Store.UpdateImage(context.WithoutCancel(ctx), before); uerr != nil {
			c.log.Error("restoring an image after a failed delete", "image", im.ID, "err", uerr)
		}
		return err
	}
	ctx = context.WithoutCancel(ctx) // the file is gone: the records must go too
	if err := c.cfg.Store.DeleteImage(ctx, im.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return c.cfg.Store.DeleteCatalogBuild(ctx, im.ID)
}

// check asks upstream whether a new build was published, and starts its
// download if so. Whatever the outcome, the check is recorded and the next
// one scheduled; a failed check changes nothing else.
func (c *Controller) check(ctx context.Context, r *store.CatalogRefresh, e catalog.Entry, pool store.Pool) error {
	now := c.cfg.Now()
	r.LastCheckAt = now
	if c.cfg.Interval > 0 {
		r.NextCheckAt = now.Add(c.cfg.Interval)
	}
	if e.Checksum != "" {
		r.Result, r.Error = "the catalog pins this entry's digest ("+e.Checksum+"): there is no other build to fetch", ""
		return c.save(ctx, *r)
	}
	cur, err := c.build(ctx, r, r.CurrentImageID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	im, err := c.cfg.Store.GetImage(ctx, r.CurrentImageID)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, c.cfg.CheckTimeout)
	up, err := ask(cctx, c.cfg.Client, e, cur)
	cancel()
	if err != nil {
		r.Result, r.Error = "", fmt.Sprintf("checking upstream failed: %v; the current image %s is unchanged", err, im.Name)
		c.log.Info("a catalog check failed", "entry", e.ID, "pool", pool.Name, "err", err)
		return c.save(ctx, *r)
	}
	changed, why := up.changedFrom(cur, im)
	if !changed {
		r.Result, r.Error = why, ""
		if cur.ImageID != "" && (cur.ETag != up.ETag || cur.LastModified != up.LastModified || (cur.Digest == "" && up.Digest != "")) {
			// The first check of an adopted build learns its validators.
			cur.ETag, cur.LastModified = up.ETag, up.LastModified
			if cur.Digest == "" {
				cur.Digest = up.Digest
			}
			if err := c.cfg.Store.PutCatalogBuild(ctx, cur); err != nil {
				return err
			}
		}
		return c.save(ctx, *r)
	}
	return c.startBuild(ctx, r, e, pool, im, cur, up, why)
}

// startBuild creates the download of a new build, named with its date,
// through the same store call and job as DownloadImage.
func (c *Controller) startBuild(ctx context.Context, r *store.CatalogRefresh, e catalog.Entry, pool store.Pool, cur store.Image, curBuild store.CatalogBuild, up upstream, why string) error {
	now := c.cfg.Now()
	builtAt := up.builtAt()
	if builtAt.IsZero() || buildLabel(builtAt) == curBuild.Build {
		// Upstream did not date it, or kept the old date for new bytes
		// (its validators lag its checksum file): date it by the fetch.
		builtAt = now
	}
	label := buildLabel(builtAt)
	ext := path.Ext(urlPath(e.URL))
	name := e.ID + "-" + label + ext
	iso := strings.EqualFold(ext, ".iso")
	kind := store.KindCloudImage
	if iso {
		kind = store.KindISO
	}
	im := store.Image{
		ID: newID("img"), PoolID: pool.ID, Name: name, Kind: kind, State: store.ImagePending,
		RelPath: poolfs.ImagePath(name, iso), Origin: store.OriginDownloaded, CreatedAt: now, UpdatedAt: now,
		OSDistro: e.OS.Distro, OSVersion: e.OS.Version, OSArch: e.OS.Arch,
	}
	j := store.Job{
		ID: newID("job"), Kind: "download", State: store.JobQueued, ImageID: im.ID, PoolID: pool.ID,
		Source: sourcePrefix + e.ID, URL: e.URL,
		Message: "queued: catalog refresh of " + e.ID, CreatedAt: now, UpdatedAt: now,
	}
	// Verified against the digest this check saw, so the build recorded
	// is the build fetched; without one, against the checksum file.
	if up.Digest != "" {
		j.Checksum = up.Digest
	} else {
		j.ChecksumURL = e.ChecksumURL
	}
	created, err := c.cfg.Store.CreateDownload(ctx, im, j)
	switch {
	case errors.Is(err, store.ErrConflict) && created.ID != "":
		r.Result, r.Error = fmt.Sprintf("upstream changed (%s), but download job %s of this entry is already running in the pool; the next check looks again", why, created.ID), ""
		return c.save(ctx, *r)
	case errors.Is(err, store.ErrConflict):
		r.Result, r.Error = "", fmt.Sprintf("upstream changed (%s), but pool %s already has an image at %s; remove it (quarry image rm) and refresh again", why, pool.Name, im.RelPath)
		return c.save(ctx, *r)
	case err != nil:
		return err
	}
	b := store.CatalogBuild{ImageID: im.ID, CatalogID: e.ID, PoolID: pool.ID, Build: label, BuiltAt: builtAt,
		ETag: up.ETag, LastModified: up.LastModified, Digest: up.Digest, CreatedAt: now}
	if err := c.cfg.Store.PutCatalogBuild(ctx, b); err != nil {
		return err
	}
	r.JobID, r.Error = created.ID, ""
	r.Result = fmt.Sprintf("upstream changed (%s); downloading build %s next to %s", why, label, cur.Name)
	if err := c.save(ctx, *r); err != nil {
		return err
	}
	if err := c.cfg.Store.AppendJobEvent(ctx, store.JobEvent{JobID: created.ID, Time: now,
		Message: fmt.Sprintf("catalog refresh: upstream changed (%s); new build %s of %s goes next to %s", why, label, e.ID, cur.Name)}); err != nil {
		c.log.Warn("recording a job event", "job", created.ID, "err", err)
	}
	c.cfg.Enqueue(created.ID)
	c.log.Info("upstream published a new build; downloading it", "entry", e.ID, "pool", pool.Name, "image", name, "why", why)
	return nil
}

// buildLabel names a build by its date, to the second (UTC).
func buildLabel(t time.Time) string { return t.UTC().Format("20060102-150405") }

func urlPath(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	return u.Path
}

// newID returns a random id like the API's ("job-3f2a9c1b7d4e").
func newID(kind string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return kind + "-" + hex.EncodeToString(b)
}
