import { ConnectError } from "@connectrpc/connect";

/** The server's message, verbatim, without the "[code]" prefix. */
export function errorMessage(e: unknown): string {
  if (!e) return "";
  if (e instanceof ConnectError) return e.rawMessage || e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}
