import { useRole } from "../lib/session";
import { EmptyState } from "./EmptyState";

export function AdminOnly({ what }: { what: string }) {
  const role = useRole();
  return (
    <EmptyState title={`${what} are for admins`}>
      You are signed in as {role}. Sign in with an admin token to see {what.toLowerCase()}.
    </EmptyState>
  );
}
