import { useMutation, useQuery } from "@connectrpc/connect-query";
import { skipToken } from "@tanstack/react-query";
import { StoragePoolService, type StoragePool } from "../gen/quarry/v1/pool_pb";
import { NodeService } from "../gen/quarry/v1/node_pb";
import { useInvalidate } from "./invalidate";

export function usePools() {
  return useQuery(StoragePoolService.method.listPools, {});
}

export function usePool(id: string | undefined) {
  return useQuery(StoragePoolService.method.getPool, id ? { id } : skipToken);
}

export function useCreatePool() {
  const inv = useInvalidate();
  return useMutation(StoragePoolService.method.createPool, { onSuccess: () => inv(StoragePoolService, NodeService) });
}

export function useUpdatePool() {
  const inv = useInvalidate();
  return useMutation(StoragePoolService.method.updatePool, { onSuccess: () => inv(StoragePoolService, NodeService) });
}

export function useDeletePool() {
  const inv = useInvalidate();
  return useMutation(StoragePoolService.method.deletePool, { onSuccess: () => inv(StoragePoolService, NodeService) });
}

/** Nodes that mount the pool now (mounted and the node READY-or-not). */
export function mountedOn(p: StoragePool): string[] {
  return p.nodes.filter((m) => m.mounted).map((m) => m.nodeName);
}
