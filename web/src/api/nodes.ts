import { useMutation, useQuery } from "@connectrpc/connect-query";
import { NodeService } from "../gen/quarry/v1/node_pb";
import { StoragePoolService } from "../gen/quarry/v1/pool_pb";
import { useInvalidate } from "./invalidate";

export function useNodes() {
  return useQuery(NodeService.method.listNodes, {});
}

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
