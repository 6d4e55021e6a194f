import { defineConfig } from 'vite';

// The console is static files on Firebase Hosting (firebase.json `hosting`, public console/dist).
// Its Firebase configuration is not built in: the page reads Hosting's reserved
// /__/firebase/init.json at start (in dev, tools/dev/console-server.ts serves one that names the
// emulators), so the bundle holds no project settings and no secrets.
export default defineConfig({
  root: import.meta.dirname,
  base: '/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: false,
    reportCompressedSize: false,
    chunkSizeWarningLimit: 1024,
  },
  logLevel: 'warn',
});
