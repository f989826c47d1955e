import { defineConfig } from "@playwright/test";

// Browser tests against a real `quarry server --dev` that the global setup
// starts (see tests/helpers/global-setup.ts). They drive Debian's Chromium:
// `apt-get install -y chromium`; never a browser Playwright downloads.
export default defineConfig({
  testDir: "tests",
  testMatch: "**/*.spec.ts",
  globalSetup: "./tests/helpers/global-setup.ts",
  // One server with shared state and 2 CPU cores: one worker.
  workers: 1,
  fullyParallel: false,
  timeout: 60_000,
  expect: { timeout: 10_000 },
  reporter: process.env.CI ? [["list"], ["github"]] : [["list"]],
  outputDir: "test-results",
  use: {
    viewport: { width: 1280, height: 800 },
    colorScheme: "light",
    reducedMotion: "reduce",
    screenshot: "only-on-failure",
    trace: "off",
    actionTimeout: 15_000,
    navigationTimeout: 20_000,
    launchOptions: {
      executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
      ],
    },
  },
});
