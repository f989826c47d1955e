import type { ReactNode } from "react";
import { AppShell, Badge, Burger, Button, Group, NavLink, Text, Tooltip } from "@mantine/core";
import { useDisclosure } from "@mantine/hooks";
import { Link, useLocation } from "react-router-dom";
import { useSession } from "../lib/session";
import { useLiveUpdates, type LiveStatus } from "../lib/events";

const links = [
  { to: "/", label: "Overview" },
  { to: "/images", label: "Images" },
  { to: "/jobs", label: "Jobs" },
  { to: "/catalog", label: "Catalog" },
  { to: "/nodes", label: "Nodes" },
  { to: "/pools", label: "Pools" },
  { to: "/tokens", label: "Tokens" },
  { to: "/audit", label: "Audit" },
];

const live: Record<LiveStatus, { text: string; color: string; hint: string }> = {
  live: { text: "Live", color: "green", hint: "Changes in the cluster show up here as they happen." },
  connecting: { text: "Reconnecting…", color: "yellow", hint: "The live stream dropped; it reconnects and refetches." },
  offline: { text: "Not live", color: "red", hint: "The live stream is unavailable; reload to see changes." },
};

export function Shell({ children }: { children: ReactNode }) {
  const [opened, { toggle, close }] = useDisclosure();
  const { state, signOut } = useSession();
  const { pathname } = useLocation();
  const status = useLiveUpdates();
  const s = state.status === "signed-in" ? state.session : undefined;

  return (
    <AppShell
      header={{ height: 56 }}
      navbar={{ width: 200, breakpoint: "sm", collapsed: { mobile: !opened } }}
      padding="md"
    >
      <AppShell.Header>
        <Group h="100%" px="md" justify="space-between" wrap="nowrap">
          <Group gap="sm" wrap="nowrap">
            <Burger opened={opened} onClick={toggle} hiddenFrom="sm" size="sm" aria-label="Toggle navigation" />
            <Text fw={700} component={Link} to="/" style={{ textDecoration: "none", color: "inherit" }}>
              Quarry
            </Text>
            <Tooltip label={live[status].hint}>
              <Badge color={live[status].color} variant="dot" role="status" aria-live="polite">
                {live[status].text}
              </Badge>
            </Tooltip>
          </Group>
          <Group gap="xs" wrap="nowrap">
            {s && (
              <Text size="sm" visibleFrom="xs" data-testid="whoami">
                {s.tokenName} · {s.role}
              </Text>
            )}
            <Button size="xs" variant="default" onClick={() => void signOut()}>
              Sign out
            </Button>
          </Group>
        </Group>
      </AppShell.Header>
      <AppShell.Navbar p="xs" component="nav" aria-label="Main">
        {links.map((l) => (
          <NavLink
            key={l.to}
            component={Link}
            to={l.to}
            label={l.label}
            onClick={close}
            active={l.to === "/" ? pathname === "/" : pathname.startsWith(l.to)}
            aria-current={(l.to === "/" ? pathname === "/" : pathname.startsWith(l.to)) ? "page" : undefined}
          />
        ))}
      </AppShell.Navbar>
      <AppShell.Main>{children}</AppShell.Main>
    </AppShell>
  );
}
