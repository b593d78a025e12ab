// Tandem browser scenarios: drive the editor and the document list that the server serves in a
// real headless Chromium (Debian's /usr/bin/chromium through playwright-core), so the Rust
// integration tests can prove that people can type together, see each other, manage documents
// and keep typing through a server restart.
//
//   node tests/browser/run.mjs <scenario> --base http://127.0.0.1:PORT [--doc NAME] [--out DIR]
//        [--timeout-ms N] [--server-cmd PATH --db-url URL]
//
// Scenarios:
//   two-typists --doc D --out DIR   alice and bob type at once; same text, presence, cursor label,
//                                   DIR/two-cursors.png; result {"text"}
//   list --doc D                    create D from /, type, see D listed; invalid and taken names
//                                   are explained in words
//   offline --doc D --server-cmd BIN --db-url URL [--out DIR]
//                                   starts its own server, stops it while typing, restarts it on
//                                   the same port, the text converges; result {"text"} (no --base;
//                                   with --out, DIR/offline.png shows the page during the outage)
//   delete --doc D                  deleting D from the list tells its open editor in words
//   bad-name                        an editor URL with an invalid name explains the rule
//   readme-screenshot --doc D --out DIR
//                                   a two-person scene for the README: DIR/screenshot.png
//   access --doc D --api-key K --expired-token T [--out DIR]
//                                   against a server with access control: pages opened with write
//                                   tokens type together, a read token's page is read-only and
//                                   follows live, bad, expired and revoked tokens show "Access
//                                   denied", the list explains that tokens are needed;
//                                   DIR/read-only.png, DIR/access-denied.png; result {"text",
//                                   "refused"} (what the read-only page tried to type)
//   tiptap --doc D --fixture-port P --out DIR
//                                   a stock Tiptap 3 editor (tiptap/, bundled by tiptap/build.mjs
//                                   first, served on 127.0.0.1:P, an origin the server must allow)
//                                   over @hocuspocus/provider: alice and bob type, with
//                                   bold and paragraph breaks, and converge; each sees the other's
//                                   caret; a y-websocket client and GET content?format=prosemirror
//                                   read the same paragraphs; DIR/tiptap-alice.png, DIR/tiptap-bob.png;
//                                   result {"editor", "prosemirror", "text", "carets"}
//
// Success: one JSON line `{"ok":true,"scenario":...}` on stdout, exit 0.
// Failure or timeout: `{"ok":false,"scenario":...,"error":...}`, exit 1, details on stderr.
// Waits are driven by the page (Playwright locators and waitForFunction), never by sleeps; one
// global timeout bounds the whole run. Set CHROMIUM_PATH to use another Chromium binary, and
// TRACE=1 to log each wait as it starts (with the time since the start) on stderr.

import { parseArgs } from 'node:util'
import { spawn } from 'node:child_process'
import { mkdirSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { createServer as createHttpServer } from 'node:http'
import { join, resolve } from 'node:path'
import { tmpdir } from 'node:os'
import { chromium } from 'playwright-core'
import WebSocket from 'ws'
import { WebsocketProvider } from 'y-websocket'
import * as Y from 'yjs'
import { buildFixture } from './tiptap/build.mjs'

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium'
const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--no-first-run', '--disable-quic'
]
const VIEWPORT = { width: 1200, height: 700 }

// ---------------------------------------------------------------- plumbing

let scenario = null
let browser = null
let finished = false
const servers = new Set() // server processes this run started
const pending = new Set() // labels of the waits in progress, for the timeout message

function parseCli (argv) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      base: { type: 'string' },
      doc: { type: 'string' },
      out: { type: 'string' },
      'timeout-ms': { type: 'string', default: '60000' },
      'server-cmd': { type: 'string' },
      'db-url': { type: 'string' },
      'api-key': { type: 'string' },
      'expired-token': { type: 'string' },
      'fixture-port': { type: 'string' }
    }
  })
  scenario = positionals[0] ?? null
  if (positionals.length !== 1) throw new Error('expected exactly one scenario name')
  const timeoutMs = Number(values['timeout-ms'])
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new Error('--timeout-ms must be a positive number')
  const base = values.base?.replace(/\/+$/, '')
  return { ...values, base, timeoutMs }
}

function need (value, flag) {
  if (value === undefined || value === '') throw new Error(`${flag} is required for scenario ${scenario}`)
  return value
}

const T0 = Date.now()
const log = (...args) => console.error(`[${scenario} +${Date.now() - T0}ms]`, ...args)

// Labels a wait so a timeout can say what it was waiting for.
async function step (label, promise) {
  if (process.env.TRACE) log('wait:', label)
  pending.add(label)
  try {
    return await promise
  } finally {
    pending.delete(label)
  }
}

// Close the browser, stop any server this run started, print the single result line, exit.
async function finish (result, code) {
  if (finished) return
  finished = true
  const closing = browser ? browser.close().catch((err) => log('browser close failed:', err.message)) : null
  await Promise.race([closing, new Promise((resolve) => setTimeout(resolve, 5000))])
  await Promise.all([...servers].map((s) => stopServer(s).catch(() => {})))
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(code))
}

function fail (err) {
  log('failed:', err?.stack ?? err)
  finish({ ok: false, scenario, error: String(err?.message ?? err) }, 1)
}

// ---------------------------------------------------------------- browser

async function launch () {
  // Playwright gives every launch a fresh temporary profile (user-data dir).
  browser = await step('the browser starts',
    chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS }))
  return browser
}

const newContext = () => browser.newContext({ viewport: VIEWPORT, deviceScaleFactor: 1 })

// A page in its own browser context (own storage, so no BroadcastChannel between people), with
// the person's name already remembered so the editor joins as them (none: whatever the page picks).
// Pages that never connect may share a `context` (and so its cache).
async function personPage (name, who = name ?? 'page', context = null) {
  context ??= await newContext()
  if (name) {
    await context.addInitScript((n) => {
      try { window.localStorage.setItem('tandem.name', n) } catch {}
    }, name)
  }
  const page = await context.newPage()
  page.on('pageerror', (err) => fail(new Error(`${who}: uncaught error in the page: ${err.message}`)))
  page.on('console', (msg) => {
    if (msg.type() === 'error') log(`${who} console: ${msg.text()}`)
  })
  return page
}

const editorUrl = (base, doc) => `${base}/d/${encodeURIComponent(doc)}`

const waitForState = (page, states, label) => step(label ?? `status ${states.join('|')}`,
  page.waitForFunction((wanted) => wanted.includes(document.querySelector('#status')?.dataset.state),
    states, { timeout: 0 }))

async function openEditor (page, base, doc, label) {
  await step(`${label} loads the editor`, page.goto(editorUrl(base, doc)))
  await waitForState(page, ['live'], `${label} live`)
}

const textOf = (page) => page.evaluate(() => window.tandem.ytext.toString())

const waitForText = (page, label, check, arg) => step(label,
  page.waitForFunction(check, arg, { timeout: 0 }))

// Puts the caret at the start or end of the document.
async function caretTo (page, where) {
  await page.locator('.cm-content').click()
  await page.keyboard.press(where === 'start' ? 'Control+Home' : 'Control+End')
}

// ---------------------------------------------------------------- server (offline scenario)

function freePort () {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

function startServer (cmd, { dbUrl, port }) {
  const child = spawn(cmd, [], {
    env: { ...process.env, DATABASE_URL: dbUrl, TANDEM_BIND: `127.0.0.1:${port}` },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const server = { child, port, exited: null }
  server.exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      servers.delete(server)
      resolve({ code, signal })
    })
    child.once('error', (err) => {
      // The process never ran (or can no longer be signalled): nothing to wait for.
      servers.delete(server)
      resolve({ code: null, signal: null, error: err.message })
      fail(new Error(`could not run ${cmd}: ${err.message}`))
    })
  })
  for (const stream of [child.stdout, child.stderr]) {
    stream.on('data', (chunk) => process.stderr.write(`[server :${port}] ${chunk}`))
  }
  servers.add(server)
  return server
}

// Resolves once GET /healthz answers 200; rejects if the process exits first.
async function serverReady (server, label) {
  const url = `http://127.0.0.1:${server.port}/healthz`
  let exited = false
  server.exited.then(() => { exited = true })
  return step(label, (async () => {
    for (;;) {
      if (exited) throw new Error(`the server on port ${server.port} exited before it was ready`)
      try {
        const res = await fetch(url)
        if (res.status === 200) return
      } catch {
        // not listening yet
      }
      // A connection attempt is the only readiness signal an unrelated process gives.
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  })())
}

// Waits until the page says the server has stored every edit made on it.
const waitForSaved = (page, label) => step(label, page.waitForFunction(() => {
  const status = document.querySelector('#status')
  return status?.dataset.saved === 'true' && status.dataset.state === 'live' &&
    status.querySelector('.status-word')?.textContent === 'Saved'
}, null, { timeout: 0 }))

async function stopServer (server) {
  if (!servers.has(server)) return server.exited
  server.child.kill('SIGTERM')
  const kill = setTimeout(() => server.child.kill('SIGKILL'), 15000)
  const result = await server.exited
  clearTimeout(kill)
  return result
}

// ---------------------------------------------------------------- scenarios

async function twoTypists (opts) {
  const base = need(opts.base, '--base')
  const doc = need(opts.doc, '--doc')
  const out = resolve(opts.out ?? tmpdir())
  mkdirSync(out, { recursive: true })
  await launch()
  const [a, b] = await Promise.all([personPage('alice'), personPage('bob')])
  await Promise.all([openEditor(a, base, doc, 'alice'), openEditor(b, base, doc, 'bob')])

  // Two lines so the two people type at different places.
  const seed = 'Notes for the week\n\n'
  await caretTo(a, 'start')
  await a.keyboard.type(seed)
  await waitForText(b, 'bob sees the first line', (s) => window.tandem.ytext.toString().includes(s), seed)

  const typedA = 'alice writes at the top of the page now.'
  const typedB = 'bob adds his part down at the very end..'
  await caretTo(a, 'start')
  await caretTo(b, 'end')
  await step('both type at once', Promise.all([a.keyboard.type(typedA + '\n'), b.keyboard.type(typedB)]))

  const both = [typedA, typedB]
  const hasBoth = (strings) => strings.every((s) => window.tandem.ytext.toString().includes(s))
  await Promise.all([
    waitForText(a, 'alice has both lines', hasBoth, both),
    waitForText(b, 'bob has both lines', hasBoth, both)
  ])
  const text = await textOf(a)
  await waitForText(b, "bob's text equals alice's", (s) => window.tandem.ytext.toString() === s, text)
  if (!text.startsWith(typedA)) throw new Error(`alice's line is not at the top: ${JSON.stringify(text)}`)

  // Bob sees alice: in the presence bar, and as a labelled caret in his editor.
  await step('bob sees alice in #presence', b.locator('#presence [data-user-name="alice"]').waitFor({ timeout: 0 }))
  const self = await b.locator('#presence [data-user-name="bob"]').textContent()
  if (!self.includes('(you)')) throw new Error(`bob is not marked as "(you)" in his presence bar: ${JSON.stringify(self)}`)
  // alice selects the word she just typed, so bob sees her selection and her label.
  await a.keyboard.press('End')
  for (let i = 0; i < 4; i++) await a.keyboard.press('Control+Shift+ArrowLeft')
  const label = b.locator('.cm-ySelectionInfo', { hasText: 'alice' })
  await step("bob sees alice's cursor label", label.waitFor({ state: 'visible', timeout: 0 }))
  await step("bob sees alice's selection", b.locator('.cm-ySelection').first().waitFor({ state: 'visible', timeout: 0 }))

  const shot = join(out, 'two-cursors.png')
  await b.screenshot({ path: shot })
  return { text, screenshot: shot }
}

async function list (opts) {
  const base = need(opts.base, '--base')
  const doc = need(opts.doc, '--doc')
  await launch()
  const page = await personPage('dana')

  await step('the list loads', page.goto(`${base}/`))
  await step('the list has loaded', page.waitForFunction(
    () => !document.querySelector('#list-state')?.textContent.startsWith('Loading'), null, { timeout: 0 }))
  await page.locator('#doc-name').fill(doc)
  await page.locator('#create').click()
  await step(`lands on /d/${doc}`, page.waitForURL(editorUrl(base, doc), { timeout: 0 }))
  await waitForState(page, ['live'], 'editor live')
  const title = await page.title()
  if (title !== `${doc} — Tandem`) throw new Error(`tab title is ${JSON.stringify(title)}`)
  const words = 'A few words from the list test.'
  await caretTo(page, 'end')
  await page.keyboard.type(words)
  await waitForText(page, 'the words are in the document', (s) => window.tandem.ytext.toString().includes(s), words)

  await step('back to the list', page.goto(`${base}/`))
  const row = page.locator(`#docs [data-doc-id="${doc}"]`)
  await step(`${doc} is listed`, row.waitFor({ timeout: 0 }))
  await step(`${doc} shows when it was edited`, row.locator('time').waitFor({ timeout: 0 }))

  // An invalid name is explained before anything is sent.
  await page.locator('#doc-name').fill('bad name!')
  await page.locator('#create').click()
  const error = page.locator('#error')
  await step('invalid name explained', error.filter({ hasText: "isn't a valid document name" }).waitFor({ timeout: 0 }))
  if (new URL(page.url()).pathname !== '/') throw new Error(`left the list for ${page.url()}`)

  // A taken name is explained too.
  await page.locator('#doc-name').fill(doc)
  await page.locator('#create').click()
  await step('taken name explained', error.filter({ hasText: 'already exists' }).waitFor({ timeout: 0 }))
  return {}
}

async function offline (opts) {
  const cmd = need(opts['server-cmd'], '--server-cmd')
  const dbUrl = need(opts['db-url'], '--db-url')
  const doc = need(opts.doc, '--doc')
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`

  let server = startServer(cmd, { dbUrl, port })
  await serverReady(server, 'server ready')
  await launch()
  const a = await personPage('erin')
  await openEditor(a, base, doc, 'erin')
  await caretTo(a, 'end')
  await a.keyboard.type('before ')
  await waitForText(a, 'first words typed', () => window.tandem.ytext.toString().includes('before '))
  await waitForSaved(a, 'the server acknowledges the first words as stored')

  const stopped = await step('server stops on SIGTERM', stopServer(server))
  log('server stopped:', JSON.stringify(stopped))
  await waitForState(a, ['offline', 'reconnecting'], 'status offline or reconnecting')
  const during = 'during-outage '
  await a.keyboard.type(during)
  await waitForText(a, 'typing goes on offline', (s) => window.tandem.ytext.toString().includes(s) &&
    document.querySelector('.cm-content').textContent.includes(s.trim()), during)
  const outage = await a.locator('#status').evaluate((el) => ({ state: el.dataset.state, saved: el.dataset.saved, text: el.textContent }))
  log('status during the outage:', JSON.stringify(outage))
  if (outage.saved !== 'false') throw new Error(`edits typed offline are shown as saved: ${JSON.stringify(outage)}`)
  if (opts.out) {
    mkdirSync(resolve(opts.out), { recursive: true })
    await a.screenshot({ path: join(resolve(opts.out), 'offline.png') })
  }

  server = startServer(cmd, { dbUrl, port })
  await serverReady(server, 'server ready again')
  await waitForState(a, ['live'], 'erin live again')
  await waitForSaved(a, 'the edits typed offline are acknowledged as stored')
  const text = await textOf(a)
  if (!text.includes('before ') || !text.includes(during)) throw new Error(`text lost words: ${JSON.stringify(text)}`)

  // "Saved" means stored: the server is killed at once, and a second person, who can only get
  // the text from the server, gets all of it after a restart.
  server.child.kill('SIGKILL')
  log('server killed:', JSON.stringify(await server.exited))
  server = startServer(cmd, { dbUrl, port })
  await serverReady(server, 'server ready after kill -9')
  const b = await personPage('frank')
  await openEditor(b, base, doc, 'frank')
  await waitForText(b, 'the server has the text', (s) => window.tandem.ytext.toString() === s, text)

  await step('server stops on SIGTERM at the end', stopServer(server))
  return { text }
}

async function deleted (opts) {
  const base = need(opts.base, '--base')
  const doc = need(opts.doc, '--doc')
  await launch()
  const [editor, lister] = await Promise.all([personPage('gina'), personPage('hal')])
  await openEditor(editor, base, doc, 'editor')
  await caretTo(editor, 'end')
  await editor.keyboard.type('soon gone')

  await step('list loads', lister.goto(`${base}/`))
  const row = lister.locator(`#docs [data-doc-id="${doc}"]`)
  await step(`${doc} is listed`, row.waitFor({ timeout: 0 }))
  await row.locator('button.delete').click()
  await row.locator('button.confirm-delete').click()
  await step(`${doc} leaves the list`, row.waitFor({ state: 'detached', timeout: 0 }))

  const error = editor.locator('#error')
  await step('editor says the document was deleted',
    error.filter({ hasText: 'This document was deleted' }).waitFor({ timeout: 0 }))
  await step('with a link back to the list', error.locator('a[href="/"]').waitFor({ timeout: 0 }))
  await waitForState(editor, ['offline'], 'editor offline')
  return {}
}

async function badName (opts) {
  const base = need(opts.base, '--base')
  await launch()
  const page = await personPage('ivy')
  await step('editor page loads', page.goto(`${base}/d/${encodeURIComponent('bad name!')}`))
  await step('the rule is explained',
    page.locator('#error').filter({ hasText: "isn't a valid document name" }).waitFor({ timeout: 0 }))
  await step('with a link back', page.locator('#error a[href="/"]').waitFor({ timeout: 0 }))
  return {}
}

async function readmeScreenshot (opts) {
  const base = need(opts.base, '--base')
  const doc = need(opts.doc, '--doc')
  const out = resolve(need(opts.out, '--out'))
  mkdirSync(out, { recursive: true })
  await launch()
  const [a, b] = await Promise.all([personPage('Alice'), personPage('Bob')])
  await Promise.all([openEditor(a, base, doc, 'Alice'), openEditor(b, base, doc, 'Bob')])
  const body = [
    '# Launch checklist',
    '',
    'Everything we need before **Friday**. Edit freely: changes show up for everyone at once.',
    '',
    '## Before the release',
    '',
    '- [x] Freeze the schema',
    '- [ ] Write the _upgrade notes_',
    '- [ ] Run the load test against `staging`',
    '',
    '## Open questions',
    '',
    '> Do we announce it on the blog or in the newsletter first?',
    '',
    'Bob: I can draft the post tonight.',
    ''
  ].join('\n')
  await a.evaluate((s) => window.tandem.ytext.insert(0, s), body)
  await waitForText(b, 'Bob has the text', (s) => window.tandem.ytext.toString() === s, body)
  // Alice selects "upgrade notes"; Bob's caret sits at the end of his line.
  await a.evaluate(() => {
    const { view } = window.tandem
    const at = view.state.doc.toString().indexOf('upgrade notes')
    view.focus()
    view.dispatch({ selection: { anchor: at, head: at + 'upgrade notes'.length } })
  })
  await b.evaluate(() => {
    const { view } = window.tandem
    const at = view.state.doc.toString().indexOf('tonight.') + 'tonight.'.length
    view.focus()
    view.dispatch({ selection: { anchor: at } })
  })
  await step('Bob sees Alice', b.locator('.cm-ySelectionInfo', { hasText: 'Alice' }).waitFor({ state: 'visible', timeout: 0 }))
  await step('Bob sees Alice in #presence', b.locator('#presence [data-user-name="Alice"]').waitFor({ timeout: 0 }))
  const shot = join(out, 'screenshot.png')
  await b.screenshot({ path: shot })
  return { screenshot: shot }
}

// ---------------------------------------------------------------- access control

// The server's REST API as an application's backend calls it, with its API key.
async function backend (base, apiKey, method, path, body) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${apiKey}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  if (!res.ok) throw new Error(`${method} ${path} answered ${res.status}: ${await res.text()}`)
  return res
}

// A page opened with `token` (none when null); counts the WebSockets it opens.
async function tokenPage (base, doc, token, who, context = null) {
  const page = await personPage(null, who, context)
  page.sockets = []
  page.on('websocket', (ws) => page.sockets.push(ws.url()))
  const query = token === null ? '' : `?token=${encodeURIComponent(token)}`
  await step(`${who} loads the editor`, page.goto(`${editorUrl(base, doc)}${query}`))
  return page
}

// Waits until the page says "Access denied" for a reason matching `why`, without having connected.
async function expectDenied (page, who, why, { connected = false } = {}) {
  const panel = page.locator('#denied')
  await step(`${who} shows Access denied`, panel.waitFor({ state: 'visible', timeout: 0 }))
  await waitForState(page, ['denied'], `${who} status says denied`)
  const detail = await page.locator('#denied-detail').textContent()
  if (!why.test(detail)) throw new Error(`${who}: the reason ${JSON.stringify(detail)} does not match ${why}`)
  if (!(await panel.textContent()).includes('Access denied')) throw new Error(`${who}: the panel does not say "Access denied"`)
  if (await page.locator('#editor').isVisible()) throw new Error(`${who}: the text is still shown`)
  if (!connected && page.sockets.length > 0) throw new Error(`${who} opened a WebSocket: ${page.sockets.join(', ')}`)
  return detail
}

async function accessControl (opts) {
  const base = need(opts.base, '--base')
  const doc = need(opts.doc, '--doc')
  const apiKey = need(opts['api-key'], '--api-key')
  const expired = need(opts['expired-token'], '--expired-token')
  const out = resolve(opts.out ?? tmpdir())
  mkdirSync(out, { recursive: true })
  const api = (method, path, body) => backend(base, apiKey, method, path, body)
  const issue = async (access, user, extra = {}, id = doc) =>
    (await (await api('POST', `/api/docs/${encodeURIComponent(id)}/tokens`, { access, user, ...extra })).json()).token
  const stored = async () => (await api('GET', `/api/docs/${encodeURIComponent(doc)}/content?format=text`)).text()

  await step('the document is created', api('POST', '/api/docs', { id: doc }))
  const [adaToken, boToken, cyToken, otherDocToken] = await Promise.all([
    issue('write', { name: 'Ada', color: '#1e88e5' }),
    issue('write', { name: 'Bo' }),
    issue('read', { name: 'Cy', color: '#8e24aa' }),
    issue('write', { name: 'Ada' }, {}, `${doc}-other`)
  ])
  // The same claims with "write" instead of "read", under the original signature.
  const [prefix, payload, signature] = cyToken.split('.')
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString())
  const tampered = [prefix, Buffer.from(JSON.stringify({ ...claims, access: 'write' })).toString('base64url'), signature].join('.')

  await launch()

  const [ada, bo, cy] = await Promise.all([
    tokenPage(base, doc, adaToken, 'ada'), tokenPage(base, doc, boToken, 'bo'), tokenPage(base, doc, cyToken, 'cy (read)')
  ])
  await Promise.all([
    waitForState(ada, ['live'], 'ada live'), waitForState(bo, ['live'], 'bo live'), waitForState(cy, ['live'], 'cy live')
  ])

  // A token that runs out while its page is open: the session ends (1008) and the page says so.
  // Issued once the browser and the server are warmed up, with a few seconds to get live (more
  // on a second try, should a busy machine need them); the rest of the scenario runs meanwhile.
  const expiring = (async () => {
    for (const seconds of [5, 15]) {
      const dee = await tokenPage(base, doc, await issue('write', { name: 'Dee' }, { expires_in: seconds }), 'dee (expiring)')
      await waitForState(dee, ['live', 'denied'], 'dee live')
      if (await dee.locator('#denied').isVisible()) {
        log(`dee's ${seconds} s token expired before the page was live:`, await dee.locator('#denied-detail').textContent())
        continue
      }
      await expectDenied(dee, 'dee after expiry', /expired/i, { connected: true })
      return
    }
    throw new Error('dee: no token lasted until its page was live')
  })()

  // Meanwhile, tokens that let nobody in: the page says why and never connects. These pages
  // share a browser context (and its cache), one after the other.
  const refusals = (async () => {
    const context = await newContext()
    const refused = [
      [null, /token is required/i, 'no token'],
      [tampered, /signature/i, 'tampered token'],
      ['not-a-token', /malformed/i, 'garbage token'],
      [expired, /expired/i, 'expired token'],
      [otherDocToken, /another document/i, "another document's token"]
    ]
    for (const [token, why, who] of refused) {
      const page = await tokenPage(base, doc, token, who, context)
      await expectDenied(page, who, why)
      await page.close()
    }
    // The document list cannot be read without an API key: it says how documents are opened.
    const lister = await personPage(null, 'list', context)
    await step('the list loads', lister.goto(`${base}/`))
    await step('the list says tokens are needed', lister.locator('#tokens-required')
      .filter({ hasText: 'This server requires access tokens' }).waitFor({ state: 'visible', timeout: 0 }))
    if (await lister.locator('#doc-form').isVisible()) throw new Error('the list still offers to create documents')
  })()

  // Tokens leave the address bar, and a reload still finds this tab's token.
  for (const [page, who] of [[ada, 'ada'], [cy, 'cy']]) {
    if (new URL(page.url()).search !== '') throw new Error(`${who}: the token is still in the address bar: ${page.url()}`)
  }
  await step('cy reloads', cy.reload())
  await waitForState(cy, ['live'], 'cy live after a reload')

  // The people are the ones the tokens name: nobody is asked for a name.
  for (const [page, who] of [[ada, 'ada'], [bo, 'bo'], [cy, 'cy']]) {
    if (await page.locator('#user-name').isVisible()) throw new Error(`${who}: asked for a name the token gives`)
  }
  await step('bo sees Ada in #presence', bo.locator('#presence [data-user-name="Ada"]').waitFor({ timeout: 0 }))
  await step('bo sees Cy in #presence', bo.locator('#presence [data-user-name="Cy"]').waitFor({ timeout: 0 }))
  const adaColour = await bo.locator('#presence [data-user-name="Ada"] .dot').evaluate((el) => el.style.backgroundColor)
  if (adaColour !== 'rgb(30, 136, 229)') throw new Error(`Ada's colour is ${adaColour}, not the token's #1e88e5`)
  if (!(await ada.locator('#presence [data-user-name="Ada"]').textContent()).includes('(you)')) throw new Error('ada is not "(you)"')

  // Writers: no badge, typing reaches the other writer both ways.
  for (const [page, who] of [[ada, 'ada'], [bo, 'bo']]) {
    if (await page.locator('#access-badge').isVisible()) throw new Error(`${who} shows "Read-only" with a write token`)
  }
  const adaLine = 'Ada writes with a write token. '
  await caretTo(ada, 'start')
  await ada.keyboard.type(adaLine)
  await waitForText(bo, 'bo receives ada\'s words', (s) => window.tandem.ytext.toString().includes(s), adaLine)
  const boLine = 'Bo answers.'
  await caretTo(bo, 'end')
  await bo.keyboard.type(boLine)
  await waitForText(ada, 'ada receives bo\'s words', (s) => window.tandem.ytext.toString().includes(s), boLine)

  // The reader: a visible "Read-only", the text live, and typing that changes nothing.
  const badge = cy.locator('#access-badge')
  await step('cy shows Read-only', badge.waitFor({ state: 'visible', timeout: 0 }))
  if ((await badge.textContent()).trim() !== 'Read-only') throw new Error(`the badge says ${JSON.stringify(await badge.textContent())}`)
  const shared = await textOf(ada)
  await waitForText(cy, 'cy has the text', (s) => window.tandem.ytext.toString() === s, shared)
  const refused = 'cy-must-not-write'
  await cy.locator('.cm-content').click()
  await cy.keyboard.press('Control+End')
  await cy.keyboard.type(refused)
  await cy.keyboard.press('Enter')
  await cy.keyboard.press('Control+Home')
  await cy.keyboard.press('Delete')
  await cy.keyboard.press('Backspace')
  const afterTyping = await cy.evaluate(() => ({ y: window.tandem.ytext.toString(), shown: window.tandem.view.state.doc.toString() }))
  if (afterTyping.y !== shared || afterTyping.shown !== shared) throw new Error(`typing changed the read-only page: ${JSON.stringify(afterTyping)}`)
  // A writer's next words still reach the reader, and nothing of the reader's reached anyone.
  const later = ' Ada adds more while Cy watches.'
  await caretTo(ada, 'end')
  await ada.keyboard.type(later)
  await waitForText(cy, 'cy receives ada\'s later words live', (s) => window.tandem.ytext.toString().includes(s), later)
  const withLater = await textOf(ada)
  await waitForText(cy, "cy's text equals ada's", (s) => window.tandem.ytext.toString() === s &&
    document.querySelector('.cm-content').textContent.includes(s.slice(-20)), withLater)
  await waitForText(bo, "bo's text equals ada's", (s) => window.tandem.ytext.toString() === s, withLater)
  await step('the server stores the writers\' text', (async () => {
    while ((await stored()) !== withLater) await new Promise((resolve) => setTimeout(resolve, 50))
  })())
  await cy.screenshot({ path: join(out, 'read-only.png') })

  // Revocation turns open pages, read and write, into "Access denied" and stops their retries.
  const revoke = (user) => api('POST', `/api/docs/${encodeURIComponent(doc)}/disconnect`, { user })
  await step('Cy and Bo are revoked', Promise.all([revoke('Cy'), revoke('Bo')]))
  await Promise.all([
    expectDenied(cy, 'cy after revocation', /revoked/i, { connected: true }),
    expectDenied(bo, 'bo after revocation', /revoked/i, { connected: true })
  ])
  await cy.screenshot({ path: join(out, 'access-denied.png') })
  for (const [page, who] of [[cy, 'cy'], [bo, 'bo']]) {
    const retrying = await page.evaluate(() => window.tandem.provider.shouldConnect || window.tandem.provider.ws !== null)
    if (retrying) throw new Error(`${who} still tries to connect after losing access`)
  }

  // Ada was not revoked: still live, and her words are stored.
  const last = ' Ada stays.'
  await caretTo(ada, 'end')
  await ada.keyboard.type(last)
  await waitForText(ada, 'ada typed after the revocations', (s) => window.tandem.ytext.toString().endsWith(s), last)
  const text = await textOf(ada)
  await step('the server stores ada\'s last words', (async () => {
    while ((await stored()) !== text) await new Promise((resolve) => setTimeout(resolve, 50))
  })())
  const adaState = await ada.locator('#status').getAttribute('data-state')
  if (adaState !== 'live') throw new Error(`ada is ${adaState} after others were revoked`)

  await step('the expiring token ends its page', expiring)
  await step('refused tokens and the list are checked', refusals)
  return { text, refused }
}

// ---------------------------------------------------------------- tiptap (a stock Tiptap 3 editor)

// Serves the fixture files from a plain HTTP server of its own on 127.0.0.1:port, as a Tiptap
// app is served from its own origin; Tandem must list that origin (--allowed-origin) for the
// pages to connect. Resolves to the server once it listens.
function serveFixture (files, port) {
  const bodies = Object.fromEntries(Object.entries(files).map(([name, path]) => [`/${name}`, readFileSync(path)]))
  const types = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8' }
  const server = createHttpServer((req, res) => {
    const path = new URL(req.url, 'http://fixture').pathname
    const body = req.method === 'GET' ? bodies[path] : undefined
    if (!body) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not part of the fixture')
      return
    }
    res.writeHead(200, { 'content-type': types[path.split('.').pop()], 'cache-control': 'no-store' }).end(body)
  })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => resolve(server))
  })
}

// Paragraphs as lists of runs, [[{text, marks}]], from ProseMirror JSON (editor.getJSON() or
// Tandem's format=prosemirror); mark names sorted. Throws on anything but a doc of paragraphs.
function pmRuns (json) {
  if (json?.type !== 'doc') throw new Error(`not a ProseMirror doc: ${JSON.stringify(json)}`)
  return (json.content ?? []).map((block) => {
    if (block.type !== 'paragraph') throw new Error(`unexpected block ${JSON.stringify(block)}`)
    return (block.content ?? []).map((inline) => {
      if (inline.type !== 'text') throw new Error(`unexpected inline ${JSON.stringify(inline)}`)
      return { text: inline.text, marks: (inline.marks ?? []).map((m) => m.type).sort() }
    })
  })
}

// The same shape from a Y.XmlFragment as y-prosemirror writes it: an element per paragraph, a
// Y.XmlText inside whose formatting attributes are the marks.
function yRuns (fragment) {
  return fragment.toArray().map((block) => {
    if (!(block instanceof Y.XmlElement) || block.nodeName !== 'paragraph') {
      throw new Error(`unexpected block ${block.toString()}`)
    }
    return block.toArray().flatMap((child) => {
      if (!(child instanceof Y.XmlText)) throw new Error(`unexpected inline ${child.toString()}`)
      return child.toDelta().map((op) => ({ text: op.insert, marks: Object.keys(op.attributes ?? {}).sort() }))
    })
  })
}

// Joins neighbouring runs with the same marks, so how a text was split does not matter.
function mergeRuns (paragraphs) {
  return paragraphs.map((runs) => runs.reduce((out, run) => {
    const last = out[out.length - 1]
    if (last && JSON.stringify(last.marks) === JSON.stringify(run.marks)) last.text += run.text
    else out.push({ ...run })
    return out
  }, []))
}

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b)

async function tiptapPage (fixture, server, doc, user, color) {
  const page = await personPage(null, user)
  const query = new URLSearchParams({ server, doc, user, color })
  await step(`${user} loads the Tiptap fixture`, page.goto(`${fixture}/index.html?${query}`))
  await step(`${user}'s provider is synced`, page.waitForFunction(
    () => document.querySelector('#status')?.dataset.state === 'synced' && window.fixture?.provider.isSynced,
    null, { timeout: 0 }))
  return page
}

const editorJson = (page) => page.evaluate(() => window.fixture.editor.getJSON())
const editorText = (page) => page.evaluate(() => window.fixture.editor.getText())

async function tiptap (opts) {
  const base = need(opts.base, '--base')
  const doc = need(opts.doc, '--doc')
  const out = resolve(opts.out ?? tmpdir())
  mkdirSync(out, { recursive: true })
  const fixturePort = Number(need(opts['fixture-port'], '--fixture-port'))
  const { files } = await step('the Tiptap fixture is bundled', buildFixture())
  const fixtureServer = await step('the fixture server listens', serveFixture(files, fixturePort))
  const fixture = `http://127.0.0.1:${fixturePort}`
  const wsBase = base.replace(/^http/, 'ws')
  await launch()
  const [a, b] = await Promise.all([
    tiptapPage(fixture, `${wsBase}/ws`, doc, 'alice', '#d81b60'),
    tiptapPage(fixture, `${wsBase}/ws`, doc, 'bob', '#1e88e5')
  ])
  const editable = (page) => page.locator('.ProseMirror[contenteditable="true"]')

  // Alice writes the first paragraph, part of it bold, and opens a second one with Enter.
  await editable(a).click()
  await a.keyboard.type('Alice writes ')
  await a.keyboard.press('Control+b')
  await a.keyboard.type('in bold')
  await a.keyboard.press('Control+b')
  await a.keyboard.type(' here.')
  await a.keyboard.press('Enter')
  await a.keyboard.type('Second paragraph.')
  await step('bob sees alice\'s two paragraphs', b.waitForFunction(
    () => window.fixture.editor.getJSON().content?.length === 2 &&
      window.fixture.editor.getText().includes('Second paragraph.'), null, { timeout: 0 }))

  // Then both type at once: alice at the very start, bob at the very end in a paragraph of his own.
  await editable(b).click()
  await b.keyboard.press('Control+End')
  const typing = [
    (async () => {
      await a.keyboard.press('Control+Home')
      await a.keyboard.type('Start: ')
    })(),
    (async () => {
      await b.keyboard.press('Enter')
      await b.keyboard.type('Bob adds his bold words.')
    })()
  ]
  await step('both type', Promise.all(typing))

  const wanted = ['Start: Alice writes in bold here.', 'Second paragraph.', 'Bob adds his bold words.']
  const hasAll = (texts) => {
    const paragraphs = (window.fixture.editor.getJSON().content ?? [])
      .map((p) => (p.content ?? []).map((t) => t.text).join(''))
    return JSON.stringify(paragraphs) === JSON.stringify(texts)
  }
  await Promise.all([
    step('alice has the three paragraphs', a.waitForFunction(hasAll, wanted, { timeout: 0 })),
    step('bob has the three paragraphs', b.waitForFunction(hasAll, wanted, { timeout: 0 }))
  ])
  // Then bob makes two of his words bold by selecting them. (A bold toggled with nothing
  // selected is a stored mark, which ProseMirror drops when a remote change lands before the
  // next keystroke: typing it while alice types would make the test race the editor.)
  await b.keyboard.press('End')
  for (let i = 0; i < ' words.'.length; i++) await b.keyboard.press('ArrowLeft')
  for (let i = 0; i < 'his bold'.length; i++) await b.keyboard.press('Shift+ArrowLeft')
  await b.keyboard.press('Control+b')
  await step('alice sees bob\'s bold words', a.waitForFunction(
    () => (window.fixture.editor.getJSON().content ?? []).flatMap((p) => p.content ?? [])
      .filter((t) => (t.marks ?? []).some((m) => m.type === 'bold')).map((t) => t.text).join('|')
      .includes('his bold'),
    null, { timeout: 0 }))
  const json = await editorJson(a)
  await step('bob\'s document equals alice\'s', b.waitForFunction(
    (expected) => JSON.stringify(window.fixture.editor.getJSON()) === expected, JSON.stringify(json), { timeout: 0 }))
  const runs = mergeRuns(pmRuns(json))
  const bold = runs.flat().filter((r) => r.marks.includes('bold')).map((r) => r.text)
  if (!same(bold, ['in bold', 'his bold'])) throw new Error(`bold runs are ${JSON.stringify(bold)}: ${JSON.stringify(runs)}`)

  // Each sees the other's caret, labelled with the other's name.
  const caretOf = (page, name) => page.locator('.collaboration-carets__caret .collaboration-carets__label', { hasText: name })
  await Promise.all([
    step('alice sees bob\'s caret', caretOf(a, 'bob').waitFor({ state: 'visible', timeout: 0 })),
    step('bob sees alice\'s caret', caretOf(b, 'alice').waitFor({ state: 'visible', timeout: 0 }))
  ])
  for (const [page, who, other] of [[a, 'alice', 'bob'], [b, 'bob', 'alice']]) {
    const labels = await page.locator('.collaboration-carets__label').allTextContents()
    if (!same(labels, [other])) throw new Error(`${who} sees carets ${JSON.stringify(labels)}, expected only ${other}'s`)
  }
  await a.screenshot({ path: join(out, 'tiptap-alice.png') })
  await b.screenshot({ path: join(out, 'tiptap-bob.png') })

  fixtureServer.close()

  // A stock y-websocket client on Tandem's own protocol reads the same XML fragment.
  const ydoc = new Y.Doc()
  const remote = new WebsocketProvider(`${wsBase}/ws`, doc, ydoc, { WebSocketPolyfill: WebSocket, disableBc: true })
  const fragment = ydoc.getXmlFragment('default')
  try {
    await step('the y-websocket client syncs', new Promise((resolve) => {
      if (remote.synced) return resolve()
      remote.once('sync', (synced) => { if (synced) resolve() })
    }))
    await step('the y-websocket client has the editors\' paragraphs', new Promise((resolve) => {
      const check = () => {
        if (same(mergeRuns(yRuns(fragment)), runs)) {
          ydoc.off('update', check)
          resolve()
        }
      }
      ydoc.on('update', check)
      check()
    }))
  } finally {
    remote.destroy()
  }

  // Tandem's REST view of the document agrees with the editor.
  const res = await step('GET content?format=prosemirror',
    fetch(`${base}/api/docs/${encodeURIComponent(doc)}/content?format=prosemirror`))
  if (res.status !== 200) throw new Error(`GET content?format=prosemirror answered ${res.status}: ${await res.text()}`)
  const served = await res.json()
  if (!same(mergeRuns(pmRuns(served)), runs)) {
    throw new Error(`REST ProseMirror ${JSON.stringify(served)} differs from the editor's ${JSON.stringify(json)}`)
  }
  return { editor: json, prosemirror: served, text: await editorText(a), carets: { alice: 'bob', bob: 'alice' } }
}

const SCENARIOS = {
  'two-typists': twoTypists,
  list,
  offline,
  delete: deleted,
  'bad-name': badName,
  'readme-screenshot': readmeScreenshot,
  access: accessControl,
  tiptap
}

// ---------------------------------------------------------------- main

async function main () {
  // A reader that goes away (`| head`) must not turn every log line into another failure.
  for (const stream of [process.stdout, process.stderr]) stream.on('error', () => {})
  process.on('uncaughtException', fail)
  process.on('unhandledRejection', fail)
  for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => fail(new Error(`stopped by ${signal}`)))
  const opts = parseCli(process.argv.slice(2))
  const run = SCENARIOS[scenario]
  if (!run) throw new Error(`unknown scenario ${JSON.stringify(scenario)}; expected one of ${Object.keys(SCENARIOS).join(', ')}`)
  setTimeout(() => {
    const waiting = [...pending].join('; ') || 'scenario'
    fail(new Error(`timeout after ${opts.timeoutMs}ms waiting for: ${waiting}`))
  }, opts.timeoutMs)
  const result = await run(opts)
  await finish({ ok: true, scenario, ...result }, 0)
}

main().catch(fail)
