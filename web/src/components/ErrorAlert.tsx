import { Alert } from "@mantine/core";
import { errorMessage } from "../lib/errors";

/** The server's message, verbatim. Renders nothing without an error. */
export function ErrorAlert({ error, title = "The server refused" }: { error: unknown; title?: string }) {
  if (!error) return null;
  return (
    <Alert color="red" title={title} role="alert">
      {errorMessage(error)}
    </Alert>
  );
}
