package cli

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	"github.com/quarry-project/quarry/internal/bytesize"
	"github.com/quarry-project/quarry/internal/errclass"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
)

func newImageCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "List, inspect, delete and discover the images in the pools",
	}
	cmd.AddCommand(newImageListCommand(g), newImageShowCommand(g), newImageRemoveCommand(g), newImageScanCommand(g),
		newImageDownloadCommand(g), newImageUploadCommand(g), newImageVerifyCommand(g), newImageCopyCommand(g),
		newImageConvertCommand(g))
	return cmd
}

func newImageListCommand(g *globals) *cobra.Command {
	var (
		pool, kind, state string
		pages             pageFlags
	)
	req := &quarryv1.ListImagesRequest{}
	cmd := &cobra.Command{
		Use:     "ls [--pool NAME] [--kind iso|cloud-image|disk] [--state STATE] [--search TEXT] [--limit N | --all]",
		Aliases: []string{"list"},
		Short:   "List images",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if pool != "" {
				p, err := resolvePool(ctx, c.pools, pool)
				if err != nil {
					return err
				}
				req.StoragePoolId = p.GetId()
			}
			if kind != "" {
				k, ok := quarryv1.ImageKind_value["IMAGE_KIND_"+strings.ToUpper(strings.ReplaceAll(kind, "-", "_"))]
				if !ok || k == 0 {
					return usageErrorf("--kind %q: use iso, cloud-image or disk", kind)
				}
				req.Kind = quarryv1.ImageKind(k)
			}
			if state != "" {
				s, ok := quarryv1.ImageState_value["IMAGE_STATE_"+strings.ToUpper(state)]
				if !ok || s == 0 {
					return usageErrorf("--state %q: use pending, downloading, uploading, verifying, ready, error, missing or deleting", state)
				}
				req.State = quarryv1.ImageState(s)
			}
			ims, next, err := collect(ctx, pages, imagePages(c, req))
			if err != nil {
				return err
			}
			sortImages(ims)
			out := cmd.OutOrStdout()
			if g.wantJSON() {
				return printJSON(out, &quarryv1.ListImagesResponse{Images: ims, NextPageToken: next})
			}
			t := newTable(out, "NAME", "POOL", "PATH", "KIND", "STATE", "SIZE", "VERIFIED", "OS", "LABEL", "ID")
			for _, im := range ims {
				t.row(im.GetName(), im.GetStoragePoolName(), im.GetPath(), enumWord(im.GetKind()), enumWord(im.GetState()),
					bytesize.Format(im.GetSizeBytes()), yesNo(im.GetVerified()), osWords(im.GetOs()), truncate(im.GetVolumeLabel(), 32), im.GetId())
			}
			if err := t.flush(); err != nil {
				return err
			}
			noteMore(cmd.ErrOrStderr(), next, len(ims), "images")
			return nil
		},
	}
	cmd.Flags().StringVar(&pool, "pool", "", "only images in this pool (name or id)")
	cmd.Flags().StringVar(&kind, "kind", "", "only images of this kind: iso, cloud-image or disk")
	cmd.Flags().StringVar(&state, "state", "", "only images in this state: ready, missing, error, pending…")
	cmd.Flags().StringVar(&req.Search, "search", "", "only images whose name, path, volume label, OS, format, digest or id contains this text")
	pages.register(cmd, "image", "images", defaultListLimit)
	return cmd
}

// defaultListLimit is how many rows a list command shows without --limit
// or --all: ten pages of the server's default size.
const defaultListLimit = 1000

// imagePages fetches pages of the images req asks for.
func imagePages(c *clients, req *quarryv1.ListImagesRequest) fetchPage[*quarryv1.Image] {
	return func(ctx context.Context, size int32, token string) ([]*quarryv1.Image, string, error) {
		r := proto.CloneOf(req)
		r.PageSize, r.PageToken = size, token
		resp, err := c.images.ListImages(ctx, connect.NewRequest(r))
		if err != nil {
			return nil, "", err
		}
		return resp.Msg.GetImages(), resp.Msg.GetNextPageToken(), nil
	}
}

// verifiedWords says whether the image's digest was checked against an
// expected one.
func verifiedWords(im *quarryv1.Image) string {
	switch {
	case im.GetVerified():
		return "yes: the digest matched the expected checksum"
	case im.GetDigest() != "":
		return "no: hashed, but no expected checksum was given"
	}
	return "no: no digest"
}

func osWords(o *quarryv1.OSInfo) string {
	return strings.Join(strings.Fields(o.GetDistro()+" "+o.GetVersion()+" "+o.GetArch()), " ")
}

// sortImages orders images by pool name, then path: the same order on
// every call, and copies of one name side by side.
func sortImages(ims []*quarryv1.Image) {
	slices.SortStableFunc(ims, func(a, b *quarryv1.Image) int {
		return cmp.Or(cmp.Compare(a.GetStoragePoolName(), b.GetStoragePoolName()), cmp.Compare(a.GetPath(), b.GetPath()))
	})
}

// imageArg connects to the control plane and resolves the image a
// command's argument names (see resolveImage), in pool when set.
func (g *globals) imageArg(cmd *cobra.Command, ref, pool string) (*clients, *quarryv1.Image, error) {
	c, err := g.clients()
	if err != nil {
		return nil, nil, err
	}
	im, err := resolveImage(cmd.Context(), c, ref, pool)
	if err != nil {
		return nil, nil, err
	}
	return c, im, nil
}

// resolveImage finds the image ref names: its id; else its path in the
// pool ("iso/a/x.iso", or the absolute path on the nodes); else its name,
// when exactly one image has it. pool, if not empty, narrows the search to
// that pool (name or id).
func resolveImage(ctx context.Context, c *clients, ref, pool string) (*quarryv1.Image, error) {
	if ref == "" {
		return nil, usageErrorf("an image name, path or id is required")
	}
	req := &quarryv1.ListImagesRequest{}
	var p *quarryv1.StoragePool
	if pool != "" {
		var err error
		if p, err = resolvePool(ctx, c.pools, pool); err != nil {
			return nil, err
		}
		req.StoragePoolId = p.GetId()
	}
	ims, err := listAll(ctx, imagePages(c, req))
	if err != nil {
		return nil, err
	}
	sortImages(ims)
	for _, im := range ims {
		if im.GetId() == ref {
			return im, nil
		}
	}
	var found []*quarryv1.Image
	if strings.Contains(ref, "/") {
		pools := map[string]string{} // id → path, for absolute paths
		if path.IsAbs(ref) {
			if pools, err = poolPaths(ctx, c, p); err != nil {
				return nil, err
			}
		}
		want := path.Clean(ref)
		for _, im := range ims {
			abs := ""
			if root := pools[im.GetStoragePoolId()]; root != "" {
				abs = path.Join(root, im.GetPath())
			}
			if im.GetPath() == want || abs == want {
				found = append(found, im)
			}
		}
	} else {
		for _, im := range ims {
			if im.GetName() == ref {
				found = append(found, im)
			}
		}
	}
	where := ""
	if p != nil {
		where = " in pool " + p.GetName()
	}
	switch len(found) {
	case 0:
		return nil, errclass.New(errclass.NotFound, "no image named, at path or with id %q%s; see quarry image ls", ref, where)
	case 1:
		return found[0], nil
	}
	var places []string
	for _, im := range found {
		places = append(places, im.GetStoragePoolName()+":"+im.GetPath())
	}
	return nil, errclass.New(errclass.InvalidArgument, "%d images are named %q%s (%s); give --pool, the path or the id",
		len(found), ref, where, strings.Join(places, ", "))
}

// poolPaths maps pool ids to their paths on the nodes: only's, or every pool's.
func poolPaths(ctx context.Context, c *clients, only *quarryv1.StoragePool) (map[string]string, error) {
	if only != nil {
		return map[string]string{only.GetId(): only.GetPath()}, nil
	}
	resp, err := c.pools.ListPools(ctx, connect.NewRequest(&quarryv1.ListPoolsRequest{}))
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, p := range resp.Msg.GetPools() {
		m[p.GetId()] = p.GetPath()
	}
	return m, nil
}

func newImageShowCommand(g *globals) *cobra.Command {
	var pool string
	cmd := &cobra.Command{
		Use:   "show NAME|ID|PATH [--pool NAME]",
		Short: "Show an image",
		Long: "Show an image, named by its id, its path in the pool (iso/a/x.iso) or its name when only\n" +
			"one image has it; --pool narrows the search to one pool.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			im, err := resolveImage(cmd.Context(), c, args[0], pool)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.wantJSON() {
				return printJSON(out, im)
			}
			now := time.Now()
			t := newTable(out)
			t.row("ID:", im.GetId())
			t.row("Name:", im.GetName())
			t.row("Pool:", im.GetStoragePoolName())
			t.row("Path:", im.GetPath())
			t.row("Kind:", enumWord(im.GetKind()))
			t.row("Format:", im.GetFormat())
			t.row("State:", enumWord(im.GetState()))
			if im.GetStateReason() != "" {
				t.row("Reason:", im.GetStateReason())
			}
			t.row("Size:", fmt.Sprintf("%s (%d bytes)", bytesize.Format(im.GetSizeBytes()), im.GetSizeBytes()))
			if v := im.GetVirtualSizeBytes(); v > 0 {
				t.row("Virtual size:", bytesize.Format(v))
			}
			t.row("Modified:", stamp(localTime(im.GetModifiedAt()), now))
			if im.GetVolumeLabel() != "" {
				t.row("Volume label:", im.GetVolumeLabel())
			}
			if im.GetKind() == quarryv1.ImageKind_IMAGE_KIND_ISO {
				t.row("Bootable:", yesNo(im.GetBootable()))
			}
			t.row("OS (guess):", osWords(im.GetOs()))
			if im.GetDigest() != "" {
				t.row("Digest:", im.GetDigest())
			}
			t.row("Verified:", verifiedWords(im))
			t.row("Origin:", im.GetOrigin())
			t.row("Created:", stamp(localTime(im.GetCreatedAt()), now))
			if im.GetMissingSince() != nil {
				t.row("Missing since:", stamp(localTime(im.GetMissingSince()), now))
			}
			return t.flush()
		},
	}
	cmd.Flags().StringVar(&pool, "pool", "", "look for the image in this pool only (name or id)")
	return cmd
}

func newImageRemoveCommand(g *globals) *cobra.Command {
	var pool string
	cmd := &cobra.Command{
		Use:     "rm NAME|ID|PATH [--pool NAME]",
		Aliases: []string{"remove", "delete"},
		Short:   "Delete an image: its file from the pool, then the record",
		Long: "Delete an image, named by its id, its path in the pool (iso/a/x.iso) or its name when only\n" +
			"one image has it; --pool narrows the search to one pool.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, im, err := g.imageArg(cmd, args[0], pool)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			resp, err := c.images.DeleteImage(ctx, connect.NewRequest(&quarryv1.DeleteImageRequest{Id: im.GetId()}))
			if err != nil {
				return err
			}
			if g.wantJSON() {
				return printJSON(cmd.OutOrStdout(), resp.Msg)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted image %s (%s in pool %s)\n", im.GetName(), im.GetPath(), im.GetStoragePoolName())
			return nil
		},
	}
	cmd.Flags().StringVar(&pool, "pool", "", "look for the image in this pool only (name or id)")
	return cmd
}

func newImageVerifyCommand(g *globals) *cobra.Command {
	var (
		wait bool
		pool string
	)
	cmd := &cobra.Command{
		Use:   "verify NAME|ID [--wait]",
		Short: "Re-hash an image's file on a node and compare it with the recorded digest",
		Long: "Start a job that re-reads the image's file on a node that mounts its pool. If the digest is\n" +
			"the one recorded when the image was verified, the image is READY again (after a scan found\n" +
			"its file changed); otherwise it is ERROR, naming both digests.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, im, err := g.imageArg(cmd, args[0], pool)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			resp, err := c.images.VerifyImage(ctx, connect.NewRequest(&quarryv1.VerifyImageRequest{Id: im.GetId()}))
			if err != nil {
				return err
			}
			out, id := cmd.OutOrStdout(), resp.Msg.GetJob().GetId()
			if wait {
				return watchJob(ctx, c, id, out, cmd.ErrOrStderr(), g.wantJSON())
			}
			if g.wantJSON() {
				return printJSON(out, resp.Msg)
			}
			verb := "started"
			if resp.Msg.GetExisting() {
				verb = "already running:"
			}
			fmt.Fprintf(out, "%s job %s verifying image %s; follow it with quarry job watch %s\n", verb, id, im.GetName(), id)
			return nil
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the job with a progress bar until it ends")
	cmd.Flags().StringVar(&pool, "pool", "", "look for the image in this pool only (name or id)")
	return cmd
}

func newImageScanCommand(g *globals) *cobra.Command {
	var pool string
	cmd := &cobra.Command{
		Use:   "scan [--pool NAME]",
		Short: "Scan pools for ISOs copied into <pool>/iso/ and bring the library up to date",
		Long: "Scan one pool, or every pool, for ISO files in <pool>/iso/ (any depth): new files become\n" +
			"READY ISO images, changed ones are updated, vanished ones turn MISSING. The cloud images and\n" +
			"disks in <pool>/images/ are checked too: vanished → MISSING, back → READY, size changed →\n" +
			"ERROR until quarry image verify finds the recorded digest again. Each pool is scanned\n" +
			"through a node that mounts it; a pool no node can reach is skipped with the reason.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			req := &quarryv1.ScanISOsRequest{}
			if pool != "" {
				p, err := resolvePool(ctx, c.pools, pool)
				if err != nil {
					return err
				}
				req.StoragePoolId = p.GetId()
			}
			stop := func() {}
			if !g.wantJSON() {
				stop = showScanProgress(ctx, c, cmd.ErrOrStderr())
			}
			resp, err := c.images.ScanISOs(ctx, connect.NewRequest(req))
			stop()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.wantJSON() {
				return printJSON(out, resp.Msg)
			}
			return printScan(out, resp.Msg)
		},
	}
	cmd.Flags().StringVar(&pool, "pool", "", "scan only this pool (name or id); default every pool")
	return cmd
}

func printScan(out io.Writer, r *quarryv1.ScanISOsResponse) error {
	t := newTable(out, "POOL", "NODE", "NEW", "UPDATED", "MISSING", "WAITING", "TIME", "SKIPPED BECAUSE")
	for _, p := range r.GetResults() {
		if p.GetSkipped() {
			t.row(p.GetStoragePoolName(), "-", "-", "-", "-", "-", "-", p.GetSkipReason())
			continue
		}
		t.row(p.GetStoragePoolName(), p.GetNodeName(), fmt.Sprint(p.GetDiscoveredCount()), fmt.Sprint(p.GetUpdatedCount()),
			fmt.Sprint(p.GetMissingCount()), fmt.Sprint(p.GetDeferredCount()), p.GetDuration().AsDuration().Round(time.Millisecond).String(), "")
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(out, scanSummary(r))
	var changed, moved uint32
	for _, p := range r.GetResults() {
		changed += p.GetChangedCount()
		moved += p.GetMovedCount()
	}
	if moved > 0 {
		fmt.Fprintf(out, "%d image(s) renamed or moved inside their pool: same image, new path.\n", moved)
	}
	if changed > 0 {
		fmt.Fprintf(out, "%d image(s) changed on disk since verified and are ERROR: see quarry image ls; quarry image verify NAME re-hashes one.\n", changed)
	}
	return nil
}

// scanSummary is the last line of a scan: what it found, and what waits
// for its writer to close it, with the pools it waits in.
func scanSummary(r *quarryv1.ScanISOsResponse) string {
	var waiting uint32
	var where []string
	for _, p := range r.GetResults() {
		if n := p.GetDeferredCount(); n > 0 {
			waiting += n
			where = append(where, fmt.Sprintf("%d in pool %s", n, p.GetStoragePoolName()))
		}
	}
	found := "No new ISOs found"
	switch n := r.GetDiscoveredCount(); {
	case n == 1:
		found = "Discovered 1 new ISO"
	case n > 1:
		found = fmt.Sprintf("Discovered %d new ISOs", n)
	case waiting > 0:
		found = "No new ISOs yet"
	}
	if waiting == 0 {
		return found + "."
	}
	files, them := "1 file is", "it"
	if waiting > 1 {
		files, them = fmt.Sprintf("%d files are", waiting), "them"
	}
	if len(where) == 1 {
		where[0] = strings.TrimPrefix(where[0], fmt.Sprintf("%d in ", waiting))
	}
	return fmt.Sprintf("%s; %s still being written (%s); a scan adds %s once complete.", found, files, strings.Join(where, ", "), them)
}

// showScanProgress prints what the running scans are doing, once a second,
// until the returned function is called.
func showScanProgress(ctx context.Context, c *clients, w io.Writer) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	// A terminal shows one line redrawn in place; a log or a pipe gets a
	// line whenever what it says changes.
	_, terminal := isTerminal(w)
	go func() {
		defer close(done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		printed, last := false, ""
		for {
			select {
			case <-ctx.Done():
				if printed && terminal {
					fmt.Fprintln(w)
				}
				return
			case <-t.C:
			}
			resp, err := c.images.GetScanStatus(ctx, connect.NewRequest(&quarryv1.GetScanStatusRequest{}))
			if err != nil {
				continue
			}
			var parts []string
			for _, r := range resp.Msg.GetRunning() {
				parts = append(parts, fmt.Sprintf("%s via %s: %d files", r.GetStoragePoolName(), r.GetNodeName(), r.GetFilesSeen()))
			}
			if len(parts) == 0 {
				continue
			}
			line := fmt.Sprintf("scanning %d of %d pools: %s", len(parts), resp.Msg.GetPoolsTotal(), strings.Join(parts, ", "))
			switch {
			case terminal:
				fmt.Fprintf(w, "\r%s   ", line)
			case line != last:
				fmt.Fprintln(w, line)
			}
			printed, last = true, line
		}
	}()
	return func() { cancel(); <-done }
}
