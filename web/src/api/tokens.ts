import { useMutation, useQuery } from "@connectrpc/connect-query";
import { skipToken } from "@tanstack/react-query";
import { AuditService, TokenService } from "../gen/quarry/v1/auth_pb";
import { useInvalidate } from "./invalidate";

export function useTokens(enabled: boolean) {
  return useQuery(TokenService.method.listTokens, enabled ? {} : skipToken);
}

export function useCreateToken() {
  const inv = useInvalidate();
  return useMutation(TokenService.method.createToken, { onSuccess: () => inv(TokenService, AuditService) });
}

export function useRevokeToken() {
  const inv = useInvalidate();
  return useMutation(TokenService.method.revokeToken, { onSuccess: () => inv(TokenService, AuditService) });
}
