// Measures what hostile clients cost a Tandem server, beside honest ones: `scripts/hardening`
// runs it against the release binary and prints one JSON object of figures (BENCHMARKS.md,
// "Hostile clients"). It asserts nothing; the integration tests (tests/api/hostile.rs) do.
//
//   node hardening.mjs BINARY
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir, cpus } from 'node:os'
import { join } from 'node:path'
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import WebSocket from 'ws'

const binary = process.argv[2]
if (!binary) throw new Error('usage: node hardening.mjs BINARY')

/** Starts the server on a fresh SQLite file; resolves once it serves. */
function start () {
  const dir = mkdtempSync(join(tmpdir(), 'tandem-hardening-'))
  const child = spawn(binary, [], {
    env: {
      ...process.env,
      DATABASE_URL: `sqlite://${join(dir, 'tandem.db')}`,
      TANDEM_BIND: '127.0.0.1:0',
      TANDEM_LOG_FORMAT: 'json',
      TANDEM_LOG: 'warn,tandem=info'
    },
    stdio: ['ignore', 'pipe', 'inherit']
  })
  return new Promise((resolve, reject) => {
    let buffered = ''
    child.stdout.on('data', chunk => {
      buffered += chunk
      let newline
      while ((newline = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, newline)
        buffered = buffered.slice(newline + 1)
        try {
          const event = JSON.parse(line)
          if (event.message === 'serving') resolve({ child, port: event.port })
        } catch {}
      }
    })
    child.on('exit', code => reject(new Error(`server exited with ${code}`)))
  })
}

const rssMiB = pid => {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  return Number(/VmRSS:\s+(\d+)/.exec(status)[1]) / 1024
}

/** A y-websocket sync message of `kind` (0 SyncStep1, 2 Update) carrying `payload`. */
const syncMessage = (kind, payload) => {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, 0)
  encoding.writeVarUint(e, kind)
  encoding.writeVarUint8Array(e, payload)
  return encoding.toUint8Array(e)
}
const syncStep1 = sv => syncMessage(0, sv)
const updateMessage = update => syncMessage(2, update)

/** A socket to one document that applies what it hears to its own Y.Doc. */
function connect (port, name) {
  const doc = new Y.Doc()
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/${name}`)
  ws.binaryType = 'arraybuffer'
  const state = { doc, ws, bytes: 0, answers: 0, updates: 0, closed: null, listeners: [] }
  ws.on('message', data => {
    const frame = new Uint8Array(data)
    state.bytes += frame.length
    const d = decoding.createDecoder(frame)
    if (decoding.readVarUint(d) !== 0) return
    const kind = decoding.readVarUint(d)
    if (kind === 1) state.answers++
    if (kind === 2) state.updates++
    if (kind === 1 || kind === 2) Y.applyUpdate(doc, decoding.readVarUint8Array(d), 'server')
    for (const listener of state.listeners) listener()
  })
  ws.on('close', (code, reason) => { state.closed = { code, reason: String(reason) } })
  return new Promise(resolve => ws.on('open', () => resolve(state)))
}

const until = (state, done, ms = 60_000) => new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error('timed out')), ms)
  const check = () => {
    if (done()) {
      clearTimeout(timer)
      state.listeners = state.listeners.filter(l => l !== check)
      resolve()
    }
  }
  state.listeners.push(check)
  check()
})

/** Types one character and resolves with the time until the server relays it back (each
 * bystander is its document's only writer, so the next update it hears is its own). */
async function echo (client) {
  const text = client.doc.getText('content')
  let update
  client.doc.once('update', u => { update = u })
  text.insert(text.length, 'k')
  const heard = client.updates
  const asked = performance.now()
  client.ws.send(updateMessage(update))
  await until(client, () => client.updates > heard)
  return performance.now() - asked
}

/** 2,000 one-character inserts by as many clients, placed across `between` items. */
function costlyUpdate (between, clients) {
  const author = new Y.Doc()
  author.clientID = 1
  const text = author.getText('content')
  text.insert(0, 'L')
  text.insert(1, 'R')
  const outline = Y.encodeStateAsUpdate(author)
  for (let i = 0; i < between; i++) text.insert(1, 'x')
  const base = Y.encodeStateAsUpdate(author)
  const inserts = []
  for (let i = 0; i < clients; i++) {
    const sybil = new Y.Doc()
    sybil.clientID = 1000 + i
    Y.applyUpdate(sybil, outline)
    const sv = Y.encodeStateVector(sybil)
    sybil.getText('content').insert(1, 'y')
    inserts.push(Y.encodeStateAsUpdate(sybil, sv))
  }
  return { base, attack: Y.mergeUpdates(inserts) }
}

async function post (port, path, body, type) {
  const response = await fetch(`http://127.0.0.1:${port}${path}`, {
    method: 'POST', headers: { 'content-type': type }, body
  })
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`)
}

async function gauge (port, name) {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  const line = text.split('\n').find(l => l.startsWith(`${name} `))
  return line ? Number(line.split(' ')[1]) : 0
}

async function costly (results) {
  const { child, port } = await start()
  const { base, attack } = costlyUpdate(40_000, 2_000)
  await post(port, '/api/docs', JSON.stringify({ id: 'costly' }), 'application/json')
  await post(port, '/api/docs/costly/update', base, 'application/octet-stream')
  const bystanders = []
  for (let i = 0; i <= cpus().length; i++) {
    const client = await connect(port, `bystander-${i}`)
    client.ws.send(syncStep1(Y.encodeStateVector(client.doc)))
    await until(client, () => client.answers > 0)
    bystanders.push(client)
  }
  const quiet = []
  for (let round = 0; round < 20; round++) {
    for (const b of bystanders) quiet.push(await echo(b))
  }
  const hostile = await connect(port, 'costly')
  const sent = performance.now()
  hostile.ws.send(updateMessage(attack))
  const during = []
  while (!hostile.closed && performance.now() - sent < 30_000) {
    for (const b of bystanders) during.push(await echo(b))
  }
  results.costly_update = {
    bytes: attack.length,
    structs: 2000,
    items_between_origins: 40_000,
    attacker_closed_after_ms: Math.round(performance.now() - sent),
    attacker_close: hostile.closed,
    bystander_echo_ms_quiet_max: Math.max(...quiet).toFixed(1),
    bystander_echo_ms_during_max: Math.max(...during).toFixed(1),
    bystander_echoes_during: during.length
  }
  for (const b of bystanders) b.ws.close()
  child.kill('SIGTERM')
  await new Promise(resolve => child.on('exit', resolve))

  // Shutdown while such an update is being applied.
  const second = await start()
  await post(second.port, '/api/docs', JSON.stringify({ id: 'costly' }), 'application/json')
  await post(second.port, '/api/docs/costly/update', base, 'application/octet-stream')
  const again = await connect(second.port, 'costly')
  again.ws.send(updateMessage(attack))
  while (await gauge(second.port, 'tandem_updates_applying_off_thread') < 1) {}
  const stopping = performance.now()
  second.child.kill('SIGTERM')
  const code = await new Promise(resolve => second.child.on('exit', resolve))
  results.shutdown_while_applying = { exit_code: code, took_ms: Math.round(performance.now() - stopping) }
}

async function packedSync (results) {
  const { child, port } = await start()
  await post(port, '/api/docs', JSON.stringify({ id: 'packed', text: 'x'.repeat(200_000) }), 'application/json')
  const rssBefore = rssMiB(child.pid)
  const empty = Y.encodeStateVector(new Y.Doc())
  const one = syncStep1(empty)
  const frame = n => {
    const all = new Uint8Array(one.length * n)
    for (let i = 0; i < n; i++) all.set(one, i * one.length)
    return all
  }
  const flood = await connect(port, 'packed')
  flood.ws.send(frame(20_000))
  await until(flood, () => flood.closed, 30_000).catch(() => {})
  await new Promise(resolve => setTimeout(resolve, 200))
  const packed = await connect(port, 'packed')
  packed.ws.send(frame(900))
  await until(packed, () => packed.answers >= 900)
  results.packed_sync_requests = {
    document_bytes: 200_000,
    frame_of_20000: flood.closed,
    frame_of_900_answered_bytes: packed.bytes,
    rss_mib_before: rssBefore.toFixed(1),
    rss_mib_after: rssMiB(child.pid).toFixed(1)
  }
  child.kill('SIGTERM')
  await new Promise(resolve => child.on('exit', resolve))
}

/** A REST batch of `inserts` random one-character inserts into a 4 M-character text, timed,
 * while editors of other documents type. */
async function textEdit (inserts) {
  const { child, port } = await start()
  await post(port, '/api/docs', JSON.stringify({ id: 'long', text: 'x'.repeat(4_000_000) }), 'application/json')
  // One more document than threads: at least one shares the edited document's thread.
  const bystanders = []
  for (let i = 0; i <= cpus().length; i++) {
    const bystander = await connect(port, `bystander-${i}`)
    bystander.ws.send(syncStep1(Y.encodeStateVector(bystander.doc)))
    await until(bystander, () => bystander.answers > 0)
    bystanders.push(bystander)
  }
  let seed = 12345
  const ops = []
  for (let i = 0; i < inserts; i++) {
    seed = (seed * 1103515245 + 12345) % 2147483648
    ops.push({ insert: 'y', at: seed % 4_000_000 })
  }
  const body = JSON.stringify({ ops })
  const started = performance.now()
  let done = false
  const editing = post(port, '/api/docs/long/text', body, 'application/json').then(() => { done = true })
  const during = []
  while (!done) for (const b of bystanders) during.push(await echo(b))
  await editing
  const figures = {
    text_units: 4_000_000,
    inserts,
    took_ms: Math.round(performance.now() - started),
    bystander_echo_ms_during_max: Math.max(...during).toFixed(1),
    bystander_echoes_during: during.length
  }
  for (const b of bystanders) b.ws.close()
  child.kill('SIGTERM')
  await new Promise(resolve => child.on('exit', resolve))
  return figures
}

const results = { cores: cpus().length }
results.rest_text_edit = [await textEdit(1_000), await textEdit(10_000)]
await packedSync(results)
await costly(results)
console.log(JSON.stringify(results, null, 2))
process.exit(0)
