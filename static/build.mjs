// Builds Tandem's browser pages into dist/, which the server binary embeds:
//   dist/index.html   the document list (served at /)
//   dist/editor.html  the editor (served at /d/{doc})
//   dist/assets/      content-hashed scripts and styles (served at /assets/, cached forever)
//
//   node build.mjs
//
// The output is deterministic: the same sources and lock file give byte-identical files, so CI can
// rebuild and check that the committed dist/ is current.

import { build } from 'esbuild'
import { readFile, rm, mkdir, writeFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { dirname, join, relative } from 'node:path'

const root = dirname(fileURLToPath(import.meta.url))
const dist = join(root, 'dist')

// page file → its entry script and HTML template
const pages = {
  'index.html': { entry: 'list', template: 'src/list/index.html' },
  'editor.html': { entry: 'editor', template: 'src/editor/editor.html' }
}

await rm(dist, { recursive: true, force: true })
await mkdir(dist, { recursive: true })

const result = await build({
  absWorkingDir: root,
  entryPoints: Object.fromEntries(
    Object.values(pages).map(({ entry }) => [entry, `src/${entry}/main.js`])
  ),
  outdir: dist,
  entryNames: 'assets/[name]-[hash]',
  chunkNames: 'assets/[name]-[hash]',
  assetNames: 'assets/[name]-[hash]',
  bundle: true,
  format: 'esm',
  splitting: false,
  minify: true,
  sourcemap: false,
  target: ['es2020', 'chrome90', 'firefox90', 'safari15'],
  charset: 'utf8',
  legalComments: 'eof',
  define: { 'process.env.NODE_ENV': '"production"' },
  metafile: true,
  logLevel: 'warning'
})

// Find each entry's script and the stylesheet esbuild split off for it.
const outputs = {}
for (const [file, info] of Object.entries(result.metafile.outputs)) {
  if (!info.entryPoint) continue
  const entry = info.entryPoint.split('/')[1]
  const url = (path) => '/' + relative(dist, join(root, path)).split('\\').join('/')
  outputs[entry] = { js: url(file), css: info.cssBundle ? url(info.cssBundle) : null }
}

const escapeAttr = (s) => s.replace(/&/g, '&amp;').replace(/"/g, '&quot;')

for (const [page, { entry, template }] of Object.entries(pages)) {
  const out = outputs[entry]
  if (!out) throw new Error(`esbuild produced no output for entry ${entry}`)
  const tags = [
    out.css && `<link rel="stylesheet" href="${escapeAttr(out.css)}">`,
    `<script type="module" src="${escapeAttr(out.js)}"></script>`
  ].filter(Boolean).join('\n    ')
  const html = await readFile(join(root, template), 'utf8')
  if (!html.includes('<!-- assets -->')) throw new Error(`${template} lacks the <!-- assets --> marker`)
  await writeFile(join(dist, page), html.replace('<!-- assets -->', tags))
}

for (const [file, info] of Object.entries(result.metafile.outputs).sort()) {
  console.log(`${relative(root, join(root, file)).padEnd(40)} ${String(info.bytes).padStart(8)} bytes`)
}
