package cli

import (
	"fmt"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/quarry-project/quarry/internal/bytesize"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
)

func newCatalogCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "catalog",
		Short: "The well-known cloud images that quarry image download takes by id",
	}
	cmd.AddCommand(&cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the catalog",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			resp, err := c.images.ListCatalog(cmd.Context(), connect.NewRequest(&quarryv1.ListCatalogRequest{}))
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.wantJSON() {
				return printJSON(out, resp.Msg)
			}
			t := newTable(out, "ID", "NAME", "OS", "USER", "URL")
			for _, e := range resp.Msg.GetEntries() {
				t.row(e.GetId(), e.GetName(), osWords(e.GetOs()), e.GetDefaultUser(), e.GetUrl())
			}
			return t.flush()
		},
	})
	cmd.AddCommand(newCatalogStatusCommand(g), newCatalogRefreshCommand(g))
	return cmd
}

func newImageDownloadCommand(g *globals) *cobra.Command {
	var catalogID, url, checksum, checksumURL, name, pool, maxRate string
	var wait bool
	cmd := &cobra.Command{
		Use:   "download (--catalog ID | --url URL) --pool NAME [--checksum sha256:HEX | --checksum-url URL] [--name NAME] [--rate 50MiB/s] [--wait]",
		Short: "Download a cloud image or ISO into a pool: resumable, verified while it streams",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			rate, err := bytesize.Parse(maxRate, true)
			if err != nil {
				return fmt.Errorf("--rate: %w", err)
			}
			p, err := resolvePool(ctx, c.pools, pool)
			if err != nil {
				return err
			}
			resp, err := c.images.DownloadImage(ctx, connect.NewRequest(&quarryv1.DownloadImageRequest{
				CatalogId: catalogID, Url: url, StoragePoolId: p.GetId(), Checksum: checksum, ChecksumUrl: checksumURL, Name: name,
				MaxBytesPerSecond: uint64(rate),
			}))
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			m := resp.Msg
			if !wait || m.GetJob() == nil {
				if g.wantJSON() {
					return printJSON(out, m)
				}
				switch {
				case m.GetJob() == nil:
					fmt.Fprintf(out, "image %s is already in pool %s (%s)\n", m.GetImage().GetName(), p.GetName(), m.GetImage().GetDigest())
				case m.GetExisting():
					fmt.Fprintf(out, "already downloading: job %s; follow it with quarry job watch %s\n", m.GetJob().GetId(), m.GetJob().GetId())
				case m.GetCopiedFromImageId() != "":
					fmt.Fprintf(out, "the cluster already holds this file (image %s): copying it instead of downloading, job %s; follow it with quarry job watch %s\n",
						m.GetCopiedFromImageId(), m.GetJob().GetId(), m.GetJob().GetId())
				default:
					fmt.Fprintf(out, "started job %s for image %s; follow it with quarry job watch %s\n", m.GetJob().GetId(), m.GetImage().GetName(), m.GetJob().GetId())
				}
				return nil
			}
			if err := watchJob(ctx, c, m.GetJob().GetId(), out, cmd.ErrOrStderr(), g.wantJSON()); err != nil {
				return err
			}
			if g.wantJSON() {
				return nil
			}
			im, err := c.images.GetImage(ctx, connect.NewRequest(&quarryv1.GetImageRequest{Id: m.GetImage().GetId()}))
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "image %s is %s in pool %s: %s, %s\n", im.Msg.GetImage().GetName(), enumWord(im.Msg.GetImage().GetState()),
				p.GetName(), bytesize.Format(im.Msg.GetImage().GetSizeBytes()), im.Msg.GetImage().GetDigest())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&catalogID, "catalog", "", "catalog entry id (see quarry catalog ls)")
	f.StringVar(&url, "url", "", "http(s) URL of the image")
	f.StringVar(&pool, "pool", "", "pool to download into (name or id)")
	f.StringVar(&checksum, "checksum", "", "expected digest, sha256:HEX or sha512:HEX")
	f.StringVar(&checksumURL, "checksum-url", "", "a checksum file (SHA256SUMS) to look the file up in at download time")
	f.StringVar(&name, "name", "", "image name (default: the catalog id or the URL's file name)")
	f.BoolVar(&wait, "wait", false, "follow the download with a progress bar until it ends")
	f.StringVar(&maxRate, "rate", "0", "bandwidth limit of this download, such as 50MiB/s (0: none; the node's --node-download-rate applies too)")
	_ = cmd.MarkFlagRequired("pool")
	return cmd
}
