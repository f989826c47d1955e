export type RoleName = "viewer" | "operator" | "admin";

const rank: Record<RoleName, number> = { viewer: 1, operator: 2, admin: 3 };

/** atLeast("operator", "admin") → true. Unknown roles get nothing. */
export function atLeast(have: string | undefined, need: RoleName): boolean {
  const h = rank[have as RoleName];
  return h !== undefined && h >= rank[need];
}
