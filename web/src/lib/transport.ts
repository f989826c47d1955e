import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";

// The session's CSRF token, sent with every RPC the cookie authenticates.
let csrfToken = "";
export function setCsrfToken(t: string) {
  csrfToken = t;
}
/** The header the session's non-RPC calls (tus uploads) carry too. */
export function csrfHeaders(): Record<string, string> {
  return csrfToken ? { "X-CSRF-Token": csrfToken } : {};
}

// Called when the server says the session is gone (expired or revoked).
type Listener = (message: string) => void;
const endedListeners = new Set<Listener>();
export function onSessionEnded(l: Listener): () => void {
  endedListeners.add(l);
  return () => endedListeners.delete(l);
}
export function reportSessionEnded(message: string) {
  for (const l of endedListeners) l(message);
}

const session: Interceptor = (next) => async (req) => {
  if (csrfToken) req.header.set("X-CSRF-Token", csrfToken);
  try {
    return await next(req);
  } catch (e) {
    const err = ConnectError.from(e);
    if (err.code === Code.Unauthenticated) reportSessionEnded(err.rawMessage);
    throw e;
  }
};

export const transport = createConnectTransport({
  baseUrl: typeof window === "undefined" ? "http://localhost" : window.location.origin,
  interceptors: [session],
});
