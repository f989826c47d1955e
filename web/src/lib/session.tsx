import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from "react";
import { useQuery, useQueryClient } from "@tanstack/react-query";
import { onSessionEnded, setCsrfToken } from "./transport";
import { atLeast, type RoleName } from "./roles";

// The dashboard's session: the cookie the server set at /auth/login plus
// the CSRF token every RPC carries. These endpoints are plain JSON, not RPCs.
export type SessionInfo = {
  role: RoleName;
  csrfToken: string;
  tokenId: string;
  tokenName: string;
  expiresAt: string;
};

type State =
  | { status: "loading" }
  | { status: "signed-out"; message?: string }
  | { status: "signed-in"; session: SessionInfo };

type Ctx = {
  state: State;
  signIn: (token: string) => Promise<void>;
  signOut: () => Promise<void>;
};

const SessionContext = createContext<Ctx | null>(null);

async function readError(res: Response): Promise<string> {
  const text = await res.text();
  try {
    const j = JSON.parse(text);
    return j.message || j.error || text;
  } catch {
    return text || `${res.status} ${res.statusText}`;
  }
}

export function SessionProvider({ children }: { children: ReactNode }) {
  const [state, setState] = useState<State>({ status: "loading" });
  const qc = useQueryClient();

  const apply = useCallback(
    (next: State) => {
      setCsrfToken(next.status === "signed-in" ? next.session.csrfToken : "");
      if (next.status !== "signed-in") qc.clear();
      setState(next);
    },
    [qc],
  );

  useEffect(() => {
    let cancelled = false;
    fetch("/auth/session", { credentials: "same-origin" })
      .then(async (res) => {
        if (cancelled) return;
        if (res.ok) apply({ status: "signed-in", session: (await res.json()) as SessionInfo });
        else apply({ status: "signed-out" });
      })
      .catch(() => !cancelled && apply({ status: "signed-out", message: "The server cannot be reached." }));
    return () => {
      cancelled = true;
    };
  }, [apply]);

  useEffect(
    () =>
      onSessionEnded((msg) => {
        setState((cur) => {
          if (cur.status !== "signed-in") return cur;
          setCsrfToken("");
          queueMicrotask(() => qc.clear());
          return {
            status: "signed-out",
            message: `Your session has ended (${msg || "expired or revoked"}). Sign in again to continue where you were.`,
          };
        });
      }),
    [qc],
  );

  const signIn = useCallback(
    async (token: string) => {
      const res = await fetch("/auth/login", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token }),
      });
      if (!res.ok) throw new Error(await readError(res));
      apply({ status: "signed-in", session: (await res.json()) as SessionInfo });
    },
    [apply],
  );

  const signOut = useCallback(async () => {
    const csrf = state.status === "signed-in" ? state.session.csrfToken : "";
    await fetch("/auth/logout", {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf },
    }).catch(() => undefined);
    apply({ status: "signed-out", message: "You signed out." });
  }, [apply, state]);

  const value = useMemo(() => ({ state, signIn, signOut }), [state, signIn, signOut]);
  return <SessionContext.Provider value={value}>{children}</SessionContext.Provider>;
}

export function useSession(): Ctx {
  const c = useContext(SessionContext);
  if (!c) throw new Error("useSession outside SessionProvider");
  return c;
}

/** useCan("operator"): whether the signed-in role may do operator things. */
export function useCan(need: RoleName): boolean {
  const { state } = useSession();
  return state.status === "signed-in" && atLeast(state.session.role, need);
}

export function useRole(): RoleName | undefined {
  const { state } = useSession();
  return state.status === "signed-in" ? state.session.role : undefined;
}

/** Whether the server offers single sign-on (GET /auth/config). */
export function useSSO(): boolean {
  const { data } = useQuery({
    queryKey: ["auth-config"],
    queryFn: async () => {
      const res = await fetch("/auth/config", { credentials: "same-origin" });
      return res.ok ? ((await res.json()) as { sso: boolean }) : { sso: false };
    },
    staleTime: Infinity,
  });
  return data?.sso ?? false;
}
