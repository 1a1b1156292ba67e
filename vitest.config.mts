import { defineConfig } from 'vitest/config';

// Unit tests of the sidebar's logic and components (src/__tests__), in jsdom.
export default defineConfig({
  test: {
    environment: 'jsdom',
    include: ['src/__tests__/**/*.spec.{ts,tsx}'],
    setupFiles: ['src/__tests__/setup.ts'],
    // Its ESM imports name files without their extension: Vite resolves them, Node not.
    server: { deps: { inline: [/@jupyter\/web-components/] } }
  }
});
