package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
)

func newJobCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "job",
		Short: "Follow and control long work: downloads",
	}
	cmd.AddCommand(newJobListCommand(g), newJobShowCommand(g), newJobWatchCommand(g), newJobCancelCommand(g))
	return cmd
}

func newJobListCommand(g *globals) *cobra.Command {
	var (
		active     bool
		pool, kind string
		pages      pageFlags
	)
	cmd := &cobra.Command{
		Use:     "ls [--active] [--pool NAME] [--kind download|upload|verify] [--limit N | --all]",
		Aliases: []string{"list"},
		Short:   "List jobs, newest first",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			req := &quarryv1.ListJobsRequest{Kind: kind}
			if active {
				req.States = []quarryv1.JobState{quarryv1.JobState_JOB_STATE_QUEUED, quarryv1.JobState_JOB_STATE_RUNNING}
			}
			if pool != "" {
				p, err := resolvePool(ctx, c.pools, pool)
				if err != nil {
					return err
				}
				req.StoragePoolId = p.GetId()
			}
			jobs, next, err := collect(ctx, pages, jobPages(c, req))
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.wantJSON() {
				return printJSON(out, &quarryv1.ListJobsResponse{Jobs: jobs, NextPageToken: next})
			}
			now := time.Now()
			t := newTable(out, "ID", "STATE", "NODE", "PROGRESS", "SOURCE", "UPDATED", "MESSAGE")
			for _, j := range jobs {
				t.row(j.GetId(), enumWord(j.GetState()), j.GetNodeName(), progressWords(j), truncate(j.GetSource(), 48),
					ago(localTime(j.GetUpdatedAt()), now), truncate(j.GetMessage(), 60))
			}
			if err := t.flush(); err != nil {
				return err
			}
			noteMore(cmd.ErrOrStderr(), next, len(jobs), "jobs")
			return nil
		},
	}
	cmd.Flags().BoolVar(&active, "active", false, "only queued and running jobs")
	cmd.Flags().StringVar(&pool, "pool", "", "only jobs in this pool (name or id)")
	cmd.Flags().StringVar(&kind, "kind", "", "only jobs of this kind: download, upload or verify")
	pages.register(cmd, "job", "jobs", defaultListLimit)
	return cmd
}

// jobPages fetches pages of the jobs req asks for.
func jobPages(c *clients, req *quarryv1.ListJobsRequest) fetchPage[*quarryv1.Job] {
	return func(ctx context.Context, size int32, token string) ([]*quarryv1.Job, string, error) {
		r := proto.CloneOf(req)
		r.PageSize, r.PageToken = size, token
		resp, err := c.jobs.ListJobs(ctx, connect.NewRequest(r))
		if err != nil {
			return nil, "", err
		}
		return resp.Msg.GetJobs(), resp.Msg.GetNextPageToken(), nil
	}
}

// progressWords is the progress column of job ls: the bytes, rate and ETA
// once known, else the phase.
func progressWords(j *quarryv1.Job) string {
	if d := progressDetail(j); d != "" {
		return d
	}
	return j.GetProgress().GetPhase()
}

func newJobShowCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show a job and its history",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			resp, err := c.jobs.GetJob(cmd.Context(), connect.NewRequest(&quarryv1.GetJobRequest{Id: args[0]}))
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if g.wantJSON() {
				return printJSON(out, resp.Msg)
			}
			return printJob(out, resp.Msg.GetJob())
		},
	}
}

func printJob(out io.Writer, j *quarryv1.Job) error {
	now := time.Now()
	t := newTable(out)
	t.row("ID:", j.GetId())
	t.row("State:", enumWord(j.GetState()))
	t.row("Source:", j.GetSource())
	t.row("Image:", j.GetImageId())
	t.row("Node:", j.GetNodeName())
	t.row("Progress:", progressWords(j))
	t.row("Message:", j.GetMessage())
	t.row("Created:", stamp(localTime(j.GetCreatedAt()), now))
	if j.GetFinishedAt() != nil {
		t.row("Finished:", stamp(localTime(j.GetFinishedAt()), now))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if len(j.GetHistory()) > 0 {
		fmt.Fprintln(out, "\nHistory:")
		h := newTable(out)
		for _, e := range j.GetHistory() {
			h.row(localTime(e.GetTime()).Format("15:04:05"), e.GetMessage())
		}
		return h.flush()
	}
	return nil
}

func newJobWatchCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "watch ID",
		Short: "Follow a job with a progress bar until it ends",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			return watchJob(cmd.Context(), c, args[0], cmd.OutOrStdout(), cmd.ErrOrStderr(), g.wantJSON())
		},
	}
}

// watchJob follows a job to its end, showing its progress on w (or
// printing each update as JSON on out), and fails if the job did not
// succeed. Interrupted, it says the job goes on.
func watchJob(ctx context.Context, c *clients, id string, out, w io.Writer, asJSON bool) error {
	stream, err := c.jobs.WatchJob(ctx, connect.NewRequest(&quarryv1.WatchJobRequest{Id: id}))
	if err != nil {
		return err
	}
	defer stream.Close()
	var view progressView
	var last *quarryv1.Job
	for stream.Receive() {
		last = stream.Msg().GetJob()
		if asJSON {
			if err := printJSON(out, stream.Msg()); err != nil {
				return err
			}
			continue
		}
		if view == nil {
			view = newProgressView(w)
		}
		view.update(last)
	}
	err = stream.Err()
	if view != nil {
		view.end(err == nil && last.GetState() == quarryv1.JobState_JOB_STATE_SUCCEEDED)
	}
	switch {
	case ctx.Err() != nil:
		return &stoppedWatching{job: id}
	case err != nil:
		return err
	}
	switch last.GetState() {
	case quarryv1.JobState_JOB_STATE_SUCCEEDED:
		if !asJSON {
			fmt.Fprintln(out, last.GetMessage())
		}
		return nil
	case quarryv1.JobState_JOB_STATE_CANCELLED:
		return fmt.Errorf("job %s was cancelled", id)
	}
	return fmt.Errorf("job %s failed: %s", id, last.GetMessage())
}

func newJobCancelCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a queued or running job; its partial file is removed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.clients()
			if err != nil {
				return err
			}
			resp, err := c.jobs.CancelJob(cmd.Context(), connect.NewRequest(&quarryv1.CancelJobRequest{Id: args[0]}))
			if err != nil {
				return err
			}
			if g.wantJSON() {
				return printJSON(cmd.OutOrStdout(), resp.Msg)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cancelling job %s\n", args[0])
			return nil
		},
	}
}
