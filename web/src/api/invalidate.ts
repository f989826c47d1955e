import { useQueryClient } from "@tanstack/react-query";
import { createConnectQueryKey } from "@connectrpc/connect-query";
import type { DescService } from "@bufbuild/protobuf";

/** useInvalidate()(ImageService): refetch every query of a service now. */
export function useInvalidate() {
  const qc = useQueryClient();
  return (...services: DescService[]) =>
    Promise.all(
      services.map((s) =>
        qc.invalidateQueries({ queryKey: createConnectQueryKey({ schema: s, cardinality: undefined }) }),
      ),
    );
}
