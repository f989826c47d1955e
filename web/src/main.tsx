import "@mantine/core/styles.css";
import "@mantine/notifications/styles.css";
import "./styles.css";
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { Alert, Anchor, Drawer, MantineProvider, Modal, Notification, createTheme } from "@mantine/core";
import { Notifications } from "@mantine/notifications";
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { TransportProvider } from "@connectrpc/connect-query";
import { BrowserRouter } from "react-router-dom";
import { transport } from "./lib/transport";
import { SessionProvider } from "./lib/session";
import { UploadsProvider } from "./api/uploads";
import { App } from "./App";
import { ErrorBoundary } from "./components/ErrorBoundary";

const queryClient = new QueryClient({
  defaultOptions: {
    // The live stream says when something changed; no refetch on a timer.
    queries: { staleTime: Infinity, refetchOnWindowFocus: false, retry: 1 },
  },
});

const theme = createTheme({
  primaryColor: "blue",
  // Darker than Mantine's default so text in the primary colour keeps a
  // 4.5:1 contrast (WCAG AA) on white.
  primaryShade: { light: 8, dark: 8 },
  respectReducedMotion: true,
  defaultRadius: "sm",
  // Every close button says what it does to screen readers.
  components: {
    Modal: Modal.extend({ defaultProps: { closeButtonProps: { "aria-label": "Close" } } }),
    Drawer: Drawer.extend({ defaultProps: { closeButtonProps: { "aria-label": "Close" } } }),
    Notification: Notification.extend({ defaultProps: { closeButtonProps: { "aria-label": "Close notification" } } }),
    // Links stand out from text without relying on colour.
    Anchor: Anchor.extend({ defaultProps: { underline: "always" } }),
    Alert: Alert.extend({ defaultProps: { closeButtonLabel: "Dismiss" } }),
  },
});

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    {/* The router wraps everything: notifications hold links too. */}
    <BrowserRouter>
    <MantineProvider theme={theme} defaultColorScheme="auto">
      <Notifications position="bottom-right" limit={6} />
      <TransportProvider transport={transport}>
        <QueryClientProvider client={queryClient}>
          <SessionProvider>
            <UploadsProvider>
              <ErrorBoundary>
                <App />
              </ErrorBoundary>
            </UploadsProvider>
          </SessionProvider>
        </QueryClientProvider>
      </TransportProvider>
    </MantineProvider>
    </BrowserRouter>
  </StrictMode>,
);
