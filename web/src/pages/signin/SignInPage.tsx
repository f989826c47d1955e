import { useState } from "react";
import { Alert, Button, Code, Container, Paper, PasswordInput, Stack, Text, Title } from "@mantine/core";
import { useSession, useSSO } from "../../lib/session";

export function SignInPage({ message }: { message?: string }) {
  const { signIn } = useSession();
  const sso = useSSO();
  const [token, setToken] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);

  async function submit(e: React.FormEvent) {
    e.preventDefault();
    if (!token.trim()) {
      setError("Paste an API token (qk_…).");
      return;
    }
    setBusy(true);
    setError("");
    try {
      await signIn(token.trim());
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <Container size={440} py={64} component="main">
      <Title order={1} size="h2" mb="md">
        Sign in to Quarry
      </Title>
      {message && (
        <Alert color="yellow" mb="md" role="status">
          {message}
        </Alert>
      )}
      {sso && (
        <Button
          component="a"
          href={`/auth/oidc/login?next=${encodeURIComponent(window.location.pathname + window.location.search)}`}
          variant="default"
          fullWidth
          mb="md"
        >
          Sign in with SSO
        </Button>
      )}
      <Paper withBorder p="lg" radius="md">
        <form onSubmit={submit} noValidate>
          <Stack>
            <PasswordInput
              label="Token"
              description="An API token: quarry token create --name NAME --role viewer|operator|admin"
              autoComplete="current-password"
              value={token}
              onChange={(e) => setToken(e.currentTarget.value)}
              error={error || undefined}
              autoFocus
            />
            <Button type="submit" loading={busy}>
              Sign in
            </Button>
          </Stack>
        </form>
      </Paper>
      <Text size="sm" c="dimmed" mt="md">
        In dev mode (<Code>quarry server --dev</Code>) the admin token is in <Code>&lt;data-dir&gt;/admin.token</Code>,
        by default <Code>$TMPDIR/quarry-dev-$UID/admin.token</Code>; the server prints its path at startup.
      </Text>
    </Container>
  );
}
