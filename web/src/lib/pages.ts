import { useState } from "react";

/**
 * usePageTokens keeps the page tokens of one paged list: the token of the
 * page shown and those before it, so "Previous" can go back (the server's
 * tokens only go forward). A new resetKey (other filters) starts again at
 * the first page, since a token is only good with the filters it was made
 * with.
 */
export function usePageTokens(resetKey: string) {
  const [state, setState] = useState<{ key: string; tokens: string[] }>({ key: resetKey, tokens: [""] });
  const tokens = state.key === resetKey ? state.tokens : [""];
  return {
    token: tokens[tokens.length - 1],
    page: tokens.length,
    next: (token: string) => setState({ key: resetKey, tokens: [...tokens, token] }),
    previous: () => setState({ key: resetKey, tokens: tokens.slice(0, -1) }),
    first: () => setState({ key: resetKey, tokens: [""] }),
  };
}

export type PageTokens = ReturnType<typeof usePageTokens>;

/** longestWord("ubuntu 24.04 server") → "ubuntu": what the server searches for. */
export function longestWord(query: string): string {
  return query
    .trim()
    .split(/\s+/)
    .reduce((a, b) => (b.length > a.length ? b : a), "");
}
