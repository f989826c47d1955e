import { Anchor } from "@mantine/core";
import { Link } from "react-router-dom";
import { EmptyState } from "../components/EmptyState";

export default function NotFoundPage() {
  return (
    <EmptyState title="No such page">
      <Anchor component={Link} to="/">
        Go to the overview
      </Anchor>
    </EmptyState>
  );
}
