import { Button, Group, Text } from "@mantine/core";
import type { PageTokens } from "../lib/pages";

/** The page of a paged list shown, and buttons to move between pages. */
export function Pager({ label, pages, nextToken, children }: { label: string; pages: PageTokens; nextToken?: string; children?: React.ReactNode }) {
  if (pages.page === 1 && !nextToken) return null; // one page: nothing to move between
  return (
    <Group justify="space-between" role="navigation" aria-label={label}>
      <Text size="sm" c="dimmed">
        Page {pages.page}
        {children ? <>, {children}</> : null}
      </Text>
      <Group gap="xs">
        <Button variant="default" size="xs" disabled={pages.page === 1} onClick={pages.first}>
          First page
        </Button>
        <Button variant="default" size="xs" disabled={pages.page === 1} onClick={pages.previous}>
          Previous page
        </Button>
        <Button variant="default" size="xs" disabled={!nextToken} onClick={() => nextToken && pages.next(nextToken)}>
          Next page
        </Button>
      </Group>
    </Group>
  );
}
