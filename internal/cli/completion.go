package cli

import (
	"context"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
)

// A lister names the objects of one kind for shell completion, through the
// public API, each with a short description.
type lister func(ctx context.Context, c *clients) ([]cobra.Completion, error)

// addCompletions completes, in the shells `quarry completion` sets up, the
// argument of every command that names a node, pool, image, job, token or
// catalog entry in a pool, and the flags that name pools or nodes.
func (g *globals) addCompletions(root *cobra.Command) {
	args := map[string]lister{
		"node show": completeNodes, "node update": completeNodes, "node rm": completeNodes, "node revoke-cert": completeNodes,
		"pool show": completePools, "pool update": completePools, "pool rm": completePools,
		"image show": completeImages, "image rm": completeImages, "image verify": completeImages,
		"job show": completeJobs, "job watch": completeJobs, "job cancel": completeJobs,
		"token revoke":   completeTokens,
		"catalog status": completeCatalog, "catalog refresh": completeCatalog,
	}
	flags := map[string]lister{"pool": completePools, "assign": completeNodes}
	lists := map[string]bool{"assign": true} // comma-separated
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if l, ok := args[strings.TrimPrefix(c.CommandPath(), root.Name()+" ")]; ok {
			c.ValidArgsFunction = g.completeArg(l)
		}
		for name, l := range flags {
			if c.LocalNonPersistentFlags().Lookup(name) != nil {
				_ = c.RegisterFlagCompletionFunc(name, g.completeFlag(l, lists[name]))
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// completeArg completes the one argument a command takes.
func (g *globals) completeArg(l lister) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return g.complete(cmd, l, "", toComplete)
	}
}

// completeFlag completes a flag that takes one name or, with list, a
// comma-separated list of them (--assign n1,n2): then the last item, and
// no space after it, as another may follow.
func (g *globals) completeFlag(l lister, list bool) cobra.CompletionFunc {
	return func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if !list {
			return g.complete(cmd, l, "", toComplete)
		}
		before, last := "", toComplete
		if i := strings.LastIndexByte(toComplete, ','); i >= 0 {
			before, last = toComplete[:i+1], toComplete[i+1:]
		}
		comps, dir := g.complete(cmd, l, before, last)
		return comps, dir | cobra.ShellCompDirectiveNoSpace
	}
}

// complete asks the control plane for l's names that start with prefix,
// each given as before+name. A server that cannot be asked completes
// nothing, rather than slowing the shell down.
func (g *globals) complete(cmd *cobra.Command, l lister, before, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
	c, err := g.clients()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 3*time.Second)
	defer cancel()
	all, err := l(ctx, c)
	if err != nil {
		cobra.CompDebugln("quarry completion: "+describe(err), true)
		return nil, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveError
	}
	var out []cobra.Completion
	for _, comp := range all {
		if strings.HasPrefix(comp, prefix) {
			out = append(out, before+comp)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

func completeNodes(ctx context.Context, c *clients) ([]cobra.Completion, error) {
	resp, err := c.nodes.ListNodes(ctx, connect.NewRequest(&quarryv1.ListNodesRequest{PageSize: maxPageSize}))
	if err != nil {
		return nil, err
	}
	var out []cobra.Completion
	for _, n := range resp.Msg.GetNodes() {
		out = append(out, cobra.CompletionWithDesc(n.GetName(), enumWord(n.GetState())+" "+n.GetManagementAddress()))
	}
	return out, nil
}

func completePools(ctx context.Context, c *clients) ([]cobra.Completion, error) {
	resp, err := c.pools.ListPools(ctx, connect.NewRequest(&quarryv1.ListPoolsRequest{}))
	if err != nil {
		return nil, err
	}
	var out []cobra.Completion
	for _, p := range resp.Msg.GetPools() {
		out = append(out, cobra.CompletionWithDesc(p.GetName(), p.GetPath()))
	}
	return out, nil
}

// completeImages offers each image's name, or its path when several images
// share the name (a name alone would be refused).
func completeImages(ctx context.Context, c *clients) ([]cobra.Completion, error) {
	resp, err := c.images.ListImages(ctx, connect.NewRequest(&quarryv1.ListImagesRequest{PageSize: maxPageSize}))
	if err != nil {
		return nil, err
	}
	ims := resp.Msg.GetImages()
	sortImages(ims)
	count := map[string]int{}
	for _, im := range ims {
		count[im.GetName()]++
	}
	var out []cobra.Completion
	for _, im := range ims {
		where := im.GetStoragePoolName() + ":" + im.GetPath() + " " + enumWord(im.GetState())
		if count[im.GetName()] > 1 {
			out = append(out, cobra.CompletionWithDesc(im.GetPath(), where))
		} else {
			out = append(out, cobra.CompletionWithDesc(im.GetName(), where))
		}
	}
	return out, nil
}

// completeJobs offers job ids, newest first, described by state and source.
func completeJobs(ctx context.Context, c *clients) ([]cobra.Completion, error) {
	resp, err := c.jobs.ListJobs(ctx, connect.NewRequest(&quarryv1.ListJobsRequest{PageSize: maxPageSize}))
	if err != nil {
		return nil, err
	}
	var out []cobra.Completion
	for _, j := range resp.Msg.GetJobs() {
		out = append(out, cobra.CompletionWithDesc(j.GetId(), enumWord(j.GetState())+" "+truncate(j.GetSource(), 60)))
	}
	return out, nil
}

// completeTokens offers the names of tokens that still work, or the ids of
// unnamed ones.
func completeTokens(ctx context.Context, c *clients) ([]cobra.Completion, error) {
	resp, err := c.tokens.ListTokens(ctx, connect.NewRequest(&quarryv1.ListTokensRequest{}))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var out []cobra.Completion
	for _, t := range resp.Msg.GetTokens() {
		state := tokenState(t, now)
		if state != "active" {
			continue
		}
		ref := t.GetName()
		if ref == "" {
			ref = t.GetId()
		}
		out = append(out, cobra.CompletionWithDesc(ref, strings.ToLower(enumWord(t.GetKind()))+" "+strings.ToLower(enumWord(t.GetRole()))))
	}
	return out, nil
}

// completeCatalog offers the catalog entries that are in a pool: the ones
// catalog status and refresh can name.
func completeCatalog(ctx context.Context, c *clients) ([]cobra.Completion, error) {
	resp, err := c.images.GetCatalogStatus(ctx, connect.NewRequest(&quarryv1.GetCatalogStatusRequest{}))
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []cobra.Completion
	for _, st := range resp.Msg.GetStatuses() {
		if !seen[st.GetCatalogId()] {
			seen[st.GetCatalogId()] = true
			out = append(out, cobra.CompletionWithDesc(st.GetCatalogId(), "current "+st.GetCurrentImageName()))
		}
	}
	return out, nil
}
