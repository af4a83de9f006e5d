/// <reference types="vitest/config" />
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// The admin API to develop against (a running `tollgate serve`).
const admin = process.env.TOLLGATE_ADMIN_URL ?? 'http://127.0.0.1:3001';

// The admin API refuses a state change whose Origin is not its own host (CSRF): through the
// dev proxy the browser's Origin is the dev server's, so present the admin's own instead.
const proxy = {
  target: admin,
  changeOrigin: true,
  configure: (p: { on: (event: 'proxyReq', f: (req: { setHeader(k: string, v: string): void; getHeader(k: string): unknown }) => void) => void }) => {
    p.on('proxyReq', (req) => {
      if (req.getHeader('origin')) req.setHeader('origin', admin);
    });
  },
};

export default defineConfig({
  base: '/',
  plugins: [react()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // Served from the binary: no source maps to embed.
    sourcemap: false,
    chunkSizeWarningLimit: 600,
  },
  server: {
    host: '127.0.0.1',
    proxy: { '/api': proxy, '/metrics': proxy, '/healthz': proxy, '/readyz': proxy },
  },
  preview: {
    host: '127.0.0.1',
    proxy: { '/api': proxy, '/metrics': proxy, '/healthz': proxy, '/readyz': proxy },
  },
  test: {
    environment: 'happy-dom',
    globals: true,
    setupFiles: ['./src/test/setup.ts'],
    include: ['src/**/*.test.{ts,tsx}'],
    css: false,
    restoreMocks: true,
  },
});
