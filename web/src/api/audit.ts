import { useQuery } from "@connectrpc/connect-query";
import { keepPreviousData, skipToken } from "@tanstack/react-query";
import { AuditService } from "../gen/quarry/v1/auth_pb";

export const auditPageSize = 50;

/** One page of the audit log, newest first, filtered on the server. */
export function useAudit(enabled: boolean, filter: { search: string; result: string }, pageToken: string) {
  return useQuery(
    AuditService.method.listAudit,
    enabled ? { pageSize: auditPageSize, pageToken, search: filter.search, result: filter.result } : skipToken,
    { placeholderData: keepPreviousData },
  );
}
