// Bundles src/ into dist/ (main.js and index.html) with esbuild.
import { build } from 'esbuild'
import { copyFileSync, mkdirSync } from 'node:fs'

mkdirSync('dist', { recursive: true })
await build({
  entryPoints: ['src/main.js'],
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  minify: true,
  sourcemap: true,
  outfile: 'dist/main.js',
  logLevel: 'warning'
})
copyFileSync('src/index.html', 'dist/index.html')
