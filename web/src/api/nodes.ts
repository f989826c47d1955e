import { useMutation, useQuery } from "@connectrpc/connect-query";
import { keepPreviousData } from "@tanstack/react-query";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { ListNodesRequestSchema, NodeService } from "../gen/quarry/v1/node_pb";
import { StoragePoolService } from "../gen/quarry/v1/pool_pb";
import { useInvalidate } from "./invalidate";

export type NodesRequest = MessageInitShape<typeof ListNodesRequestSchema>;

/** One page of nodes by name (the first, of the server's default size, by default). */
export function useNodes(req: NodesRequest = {}) {
  return useQuery(NodeService.method.listNodes, req, { placeholderData: keepPreviousData });
}

/** As many nodes as one page holds: enough to name nodes and offer them in pickers. */
export const everyNodeRequest: NodesRequest = { pageSize: 1000 };

export function useRegisterNode() {
  const inv = useInvalidate();
  return useMutation(NodeService.method.registerNode, { onSuccess: () => inv(NodeService, StoragePoolService) });
}

export function useUpdateNode() {
  const inv = useInvalidate();
  return useMutation(NodeService.method.updateNode, { onSuccess: () => inv(NodeService, StoragePoolService) });
}

export function useDeleteNode() {
  const inv = useInvalidate();
  return useMutation(NodeService.method.deleteNode, { onSuccess: () => inv(NodeService, StoragePoolService) });
}
