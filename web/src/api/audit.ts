import { useQuery } from "@connectrpc/connect-query";
import { skipToken } from "@tanstack/react-query";
import { AuditService } from "../gen/quarry/v1/auth_pb";

export const auditPageSize = 50;

/** One page of the audit log, newest first, older than beforeId (0: newest). */
export function useAudit(enabled: boolean, beforeId: bigint) {
  return useQuery(AuditService.method.listAudit, enabled ? { limit: auditPageSize, beforeId } : skipToken);
}
