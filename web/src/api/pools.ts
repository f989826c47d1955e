import { useEffect, useMemo, useState } from "react";
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

/** The pools to choose from for an image: each says which nodes mount it; one no node mounts is disabled. */
export function poolOptions(pools: StoragePool[] | undefined) {
  return (pools ?? []).map((p) => {
    const on = mountedOn(p);
    return { value: p.id, label: `${p.name} — ${on.length ? `mounted on ${on.join(", ")}` : "no node mounts it"}`, disabled: on.length === 0 };
  });
}

/**
 * usePoolChoice is the pool a dialog puts an image in (poolOptions): the
 * first pool a node mounts is chosen when the dialog opens; none says that
 * no pool can be chosen.
 */
export function usePoolChoice(opened: boolean) {
  const pools = usePools();
  const [poolId, setPoolId] = useState("");
  const options = useMemo(() => poolOptions(pools.data?.pools), [pools.data]);
  useEffect(() => {
    if (opened && !poolId) {
      const first = options.find((o) => !o.disabled);
      if (first) setPoolId(first.value);
    }
  }, [opened, poolId, options]);
  const none = !!pools.data && options.every((o) => o.disabled);
  return { options, poolId, setPoolId, none };
}
