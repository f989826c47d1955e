package cli

import (
	"fmt"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
)

func newImageConvertCommand(g *globals) *cobra.Command {
	var (
		wait               bool
		pool, format, name string
	)
	cmd := &cobra.Command{
		Use:   "convert NAME|ID --format raw|qcow2 [--name N] [--wait]",
		Short: "Convert an image into another format, as a new image in the same pool",
		Long: "Start a job that converts the image with qemu-img on a node that mounts its pool and has\n" +
			"qemu-img (Debian's qemu-utils): qcow2 to raw, raw to qcow2, vmdk or vhdx to qcow2. The result\n" +
			"is checked (qemu-img check for qcow2), hashed and registered as a new READY image named after\n" +
			"the source with the new format's extension, or --name. The source image is not changed.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, im, err := g.imageArg(cmd, args[0], pool)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			resp, err := c.images.ConvertImage(ctx, connect.NewRequest(&quarryv1.ConvertImageRequest{Id: im.GetId(), Format: format, Name: name}))
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
			fmt.Fprintf(out, "started job %s converting image %s to %s as %s; follow it with quarry job watch %s\n",
				id, im.GetName(), format, resp.Msg.GetImage().GetName(), id)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&format, "format", "", "target format: raw or qcow2 (required)")
	f.StringVar(&name, "name", "", "name of the new image; default the source's with the format's extension")
	f.BoolVar(&wait, "wait", false, "follow the job with a progress bar until it ends")
	f.StringVar(&pool, "pool", "", "look for the image in this pool only (name or id)")
	cmd.MarkFlagRequired("format")
	return cmd
}
