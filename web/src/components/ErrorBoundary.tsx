import { Component, type ReactNode } from "react";
import { Alert, Button, Code, Container, Stack } from "@mantine/core";

/** Shows what broke instead of a blank page. */
export class ErrorBoundary extends Component<{ children: ReactNode }, { error?: Error }> {
  state: { error?: Error } = {};
  static getDerivedStateFromError(error: Error) {
    return { error };
  }
  render() {
    if (!this.state.error) return this.props.children;
    return (
      <Container py="xl">
        <Alert color="red" title="The dashboard hit a bug">
          <Stack>
            <Code block>{this.state.error.message}</Code>
            <Button w="fit-content" onClick={() => window.location.reload()}>
              Reload
            </Button>
          </Stack>
        </Alert>
      </Container>
    );
  }
}
