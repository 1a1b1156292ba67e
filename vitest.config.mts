import { defineConfig } from 'vitest/config';

// Unit tests of the sidebar's logic and components (src/__tests__), in jsdom.
export default defineConfig({
  test: {
    environment: 'jsdom',
    include: ['src/__tests__/**/*.spec.{ts,tsx}']
  }
});
