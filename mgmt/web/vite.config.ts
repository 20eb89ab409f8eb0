import { defineConfig } from 'vite';

// The console is served by sfera-mgmtd at / (`--web-dir dist`); in
// development `npm exec vite` proxies /api to an mgmtd started with
// `--http --listen 127.0.0.1:8080`.
export default defineConfig({
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: false,
  },
  server: {
    proxy: { '/api': { target: 'http://127.0.0.1:8080', ws: true } },
  },
});
