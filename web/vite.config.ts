/// <reference types="vitest/config" />
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The Go server embeds dist/ and serves it at /. During development
// (`npm run dev`) and for the browser tests without an embedded bundle
// (`vite preview`), API calls go to the quarry server named by QUARRY_API.
const api = process.env.QUARRY_API ?? "http://127.0.0.1:8080";
const proxy = {
  "^/quarry\\.v1\\.": { target: api, changeOrigin: false },
  "/auth/": { target: api, changeOrigin: false },
  "/uploads/": { target: api, changeOrigin: false },
};

export default defineConfig({
  plugins: [react()],
  server: { proxy },
  preview: { proxy },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    chunkSizeWarningLimit: 1024,
  },
  test: {
    include: ["src/**/*.test.ts", "src/**/*.test.tsx"],
    environment: "node",
  },
});
