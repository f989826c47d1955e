package cli

import (
	"context"
	"slices"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/quarry-project/quarry/internal/errclass"
	quarryv1 "github.com/quarry-project/quarry/internal/gen/quarry/v1"
	"github.com/quarry-project/quarry/internal/gen/quarry/v1/quarryv1connect"
)

// People type names and scripts pass ids; every command accepts either, so
// references are resolved here, against the same lists `ls` shows.

// resolveNode returns the node ref names or identifies.
func resolveNode(ctx context.Context, c quarryv1connect.NodeServiceClient, ref string) (*quarryv1.Node, error) {
	nodes, err := listAll(ctx, nodePages(c, &quarryv1.ListNodesRequest{}))
	if err != nil {
		return nil, err
	}
	return pick(nodes, ref, "node", (*quarryv1.Node).GetId, (*quarryv1.Node).GetName)
}

// resolveNodeIDs resolves several node references with one listing,
// keeping their order and dropping repeats.
func resolveNodeIDs(ctx context.Context, c quarryv1connect.NodeServiceClient, refs []string) ([]string, error) {
	ids := []string{}
	if len(refs) == 0 {
		return ids, nil
	}
	nodes, err := listAll(ctx, nodePages(c, &quarryv1.ListNodesRequest{}))
	if err != nil {
		return nil, err
	}
	for _, ref := range refs {
		n, err := pick(nodes, ref, "node", (*quarryv1.Node).GetId, (*quarryv1.Node).GetName)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(ids, n.GetId()) {
			ids = append(ids, n.GetId())
		}
	}
	return ids, nil
}

// nodePages fetches pages of the nodes req asks for.
func nodePages(c quarryv1connect.NodeServiceClient, req *quarryv1.ListNodesRequest) fetchPage[*quarryv1.Node] {
	return func(ctx context.Context, size int32, token string) ([]*quarryv1.Node, string, error) {
		r := proto.CloneOf(req)
		r.PageSize, r.PageToken = size, token
		resp, err := c.ListNodes(ctx, connect.NewRequest(r))
		if err != nil {
			return nil, "", err
		}
		return resp.Msg.GetNodes(), resp.Msg.GetNextPageToken(), nil
	}
}

// resolvePool returns the storage pool ref names or identifies.
func resolvePool(ctx context.Context, c quarryv1connect.StoragePoolServiceClient, ref string) (*quarryv1.StoragePool, error) {
	resp, err := c.ListPools(ctx, connect.NewRequest(&quarryv1.ListPoolsRequest{}))
	if err != nil {
		return nil, err
	}
	return pick(resp.Msg.GetPools(), ref, "pool", (*quarryv1.StoragePool).GetId, (*quarryv1.StoragePool).GetName)
}

// pick finds ref among items. An id match wins over a name match, so an
// object stays reachable by its id even if another is named like that id.
func pick[T any](items []T, ref, noun string, id, name func(T) string) (T, error) {
	var zero T
	if ref == "" {
		return zero, usageErrorf("a %s name or id is required", noun)
	}
	for _, it := range items {
		if id(it) == ref {
			return it, nil
		}
	}
	var found []T
	for _, it := range items {
		if name(it) == ref {
			found = append(found, it)
		}
	}
	switch len(found) {
	case 0:
		return zero, errclass.New(errclass.NotFound, "no %s named or with id %q; see quarry %s ls", noun, ref, noun)
	case 1:
		return found[0], nil
	default:
		return zero, errclass.New(errclass.InvalidArgument, "%d %ss are named %q; give the id instead (see quarry %s ls)", len(found), noun, ref, noun)
	}
}
