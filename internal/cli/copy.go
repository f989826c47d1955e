package cli

import (
	"fmt"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/quarry-project/quarry/internal/bytesize"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
)

func newImageCopyCommand(g *globals) *cobra.Command {
	var pool, from, name string
	var wait bool
	cmd := &cobra.Command{
		Use:   "copy IMAGE --pool TARGET [--name NAME] [--from-pool POOL] [--wait]",
		Short: "Copy a READY image into another pool, from a node that holds it (never from the internet)",
		Long: "Start a job that copies the image into the target pool. On a node that mounts both pools the\n" +
			"file is copied locally (reflink, else copy_file_range); otherwise the target node pulls it from\n" +
			"a node that holds it over mutual TLS, with a one-file grant signed by the control plane. Like a\n" +
			"download, the copy resumes after a failure (from another node holding the file if one does),\n" +
			"can be cancelled with quarry job cancel, and is verified against the image's digest.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, im, err := g.imageArg(cmd, args[0], from)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			p, err := resolvePool(ctx, c.pools, pool)
			if err != nil {
				return err
			}
			resp, err := c.images.CopyImage(ctx, connect.NewRequest(&quarryv1.CopyImageRequest{
				ImageId: im.GetId(), StoragePoolId: p.GetId(), Name: name}))
			if err != nil {
				return err
			}
			out, m := cmd.OutOrStdout(), resp.Msg
			id := m.GetJob().GetId()
			if !wait {
				if g.wantJSON() {
					return printJSON(out, m)
				}
				verb := "started"
				if m.GetExisting() {
					verb = "already copying:"
				}
				fmt.Fprintf(out, "%s job %s copying image %s into pool %s as %s; follow it with quarry job watch %s\n",
					verb, id, im.GetName(), p.GetName(), m.GetImage().GetName(), id)
				return nil
			}
			if err := watchJob(ctx, c, id, out, cmd.ErrOrStderr(), g.wantJSON()); err != nil {
				return err
			}
			if g.wantJSON() {
				return nil
			}
			got, err := c.images.GetImage(ctx, connect.NewRequest(&quarryv1.GetImageRequest{Id: m.GetImage().GetId()}))
			if err != nil {
				return err
			}
			cp := got.Msg.GetImage()
			fmt.Fprintf(out, "image %s is %s in pool %s: %s, %s\n", cp.GetName(), enumWord(cp.GetState()),
				p.GetName(), bytesize.Format(cp.GetSizeBytes()), cp.GetDigest())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&pool, "pool", "", "pool to copy into (name or id)")
	f.StringVar(&name, "name", "", "name of the copy (default: the image's name)")
	f.StringVar(&from, "from-pool", "", "look for IMAGE in this pool only (name or id)")
	f.BoolVar(&wait, "wait", false, "follow the copy with a progress bar until it ends")
	_ = cmd.MarkFlagRequired("pool")
	return cmd
}
