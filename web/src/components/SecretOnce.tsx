import { Alert, Button, Code, CopyButton, Group, Stack, Text } from "@mantine/core";

/** A secret the server shows only once, with a copy button. */
export function SecretOnce({ secret, label = "Secret" }: { secret: string; label?: string }) {
  return (
    <Alert color="yellow" title={`${label} — shown only now`}>
      <Stack gap="xs">
        <Text size="sm">Copy it now: it is stored hashed and cannot be shown again.</Text>
        <Group gap="xs" wrap="nowrap" align="flex-start">
          <Code block style={{ wordBreak: "break-all", whiteSpace: "pre-wrap", flex: 1 }} data-testid="secret">
            {secret}
          </Code>
          <CopyButton value={secret}>
            {({ copied, copy }) => (
              <Button size="xs" variant="light" onClick={copy}>
                {copied ? "Copied" : "Copy"}
              </Button>
            )}
          </CopyButton>
        </Group>
      </Stack>
    </Alert>
  );
}
