// Bundles the Tiptap fixture (main.js and the npm packages it imports) into dist/main.js, one
// file with no imports, which the `tiptap` browser scenario serves to Chromium. Fails when the
// bundle would hold more than one copy of yjs: two copies do not recognise each other's types.
//
//   node tiptap/build.mjs        (run.mjs calls buildFixture() itself before the scenario)

import { build } from 'esbuild'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'

const here = dirname(fileURLToPath(import.meta.url))
export const dist = join(here, 'dist')

export async function buildFixture () {
  const result = await build({
    absWorkingDir: here,
    entryPoints: ['main.js'],
    outfile: join(dist, 'main.js'),
    bundle: true,
    format: 'esm',
    target: 'es2022',
    sourcemap: false,
    metafile: true,
    logLevel: 'warning'
  })
  const yjsCopies = new Set(Object.keys(result.metafile.inputs)
    .map((input) => input.match(/^(.*node_modules\/yjs)\//)?.[1])
    .filter(Boolean))
  if (yjsCopies.size !== 1) {
    throw new Error(`the Tiptap fixture bundles ${yjsCopies.size} copies of yjs: ${[...yjsCopies].join(', ')}`)
  }
  return { files: { 'index.html': join(here, 'index.html'), 'main.js': join(dist, 'main.js') }, yjs: [...yjsCopies][0] }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { files, yjs } = await buildFixture()
  console.log(`built ${files['main.js']} (yjs from ${yjs})`)
}
