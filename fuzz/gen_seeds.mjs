// Generates the seed corpora and the base document of the fuzz targets from real Yjs peers.
//
//   node fuzz/gen_seeds.mjs          (from the repository root; needs `npm ci` in tests/interop)
//
// Every output is deterministic (fixed client ids), so running it again rewrites the same bytes.
// Outputs:
//   fuzz/base/base_doc.bin         a v1 update: the document both targets start from
//   fuzz/seeds/sync_message/*.bin  y-websocket frames as a stock client sends them
//   fuzz/seeds/text_edit/*.json    bodies of POST /api/docs/{id}/text
import { mkdirSync, writeFileSync, readdirSync, rmSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const nm = join(here, '..', 'tests', 'interop', 'node_modules')
const Y = await import(join(nm, 'yjs', 'dist', 'yjs.mjs'))
const encoding = await import(join(nm, 'lib0', 'encoding.js'))
const syncProtocol = await import(join(nm, 'y-protocols', 'sync.js'))
const awarenessProtocol = await import(join(nm, 'y-protocols', 'awareness.js'))

const MSG_SYNC = 0
const MSG_AWARENESS = 1
const MSG_AUTH = 2
const MSG_QUERY_AWARENESS = 3

const newDoc = (clientID) => {
  const doc = new Y.Doc()
  doc.clientID = clientID
  return doc
}
const fullState = (doc) => Y.encodeStateAsUpdate(doc)
/** Runs `edit` on `doc` and returns the v1 update it produced. */
const captured = (doc, edit) => {
  let out = null
  const handler = (u) => { out = out ? Y.mergeUpdates([out, u]) : u }
  doc.on('update', handler)
  edit(doc)
  doc.off('update', handler)
  return out
}
const frame = (write) => {
  const enc = encoding.createEncoder()
  write(enc)
  return encoding.toUint8Array(enc)
}
const updateMsg = (update) => frame((e) => {
  encoding.writeVarUint(e, MSG_SYNC)
  syncProtocol.writeUpdate(e, update)
})
const step1Msg = (doc) => frame((e) => {
  encoding.writeVarUint(e, MSG_SYNC)
  syncProtocol.writeSyncStep1(e, doc)
})
const step2Msg = (doc, sv) => frame((e) => {
  encoding.writeVarUint(e, MSG_SYNC)
  syncProtocol.writeSyncStep2(e, doc, sv)
})
const awarenessMsg = (awareness, clients) => frame((e) => {
  encoding.writeVarUint(e, MSG_AWARENESS)
  encoding.writeVarUint8Array(e, awarenessProtocol.encodeAwarenessUpdate(awareness, clients))
})
const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) { out.set(p, at); at += p.length }
  return out
}

// ---- The base document: text with multi-byte characters, edited by three clients ----------
const TEXT = 'Hello wörld — 你好世界 👋🏽 café (cafe\u0301) 𝄞 ⚠️ end\n'
const base = newDoc(1)
{
  const t = base.getText('content')
  base.transact(() => t.insert(0, TEXT))
  const meta = base.getMap('meta')
  const items = base.getArray('items')
  base.transact(() => {
    meta.set('title', 'Notes 📝')
    meta.set('rev', 3)
    items.push(['one', 2, { three: [3] }])
  })
  const other = newDoc(2)
  Y.applyUpdate(other, fullState(base))
  const t2 = other.getText('content')
  other.transact(() => {
    t2.insert(6, 'big ') // splits client 1's item
    t2.format(0, 5, { bold: true })
    t2.delete(t2.toString().indexOf('世'), 1)
  })
  Y.applyUpdate(base, fullState(other))
  const third = newDoc(3)
  Y.applyUpdate(third, fullState(base))
  const t3 = third.getText('content')
  third.transact(() => {
    const at = t3.toString().indexOf('👋')
    t3.insert(at, '🎉') // next to a surrogate pair
    t3.insert(t3.length, 'ｔａｉｌ 🙂')
  })
  Y.applyUpdate(base, fullState(third))
}
const baseUpdate = fullState(base)

// ---- Sync frames -------------------------------------------------------------------------
const sync = {}
// A fresh client connecting: its SyncStep1 with an empty state vector.
sync['step1_empty'] = step1Msg(newDoc(10))
// A client that already has the base document.
const peer = newDoc(11)
Y.applyUpdate(peer, baseUpdate)
sync['step1_base'] = step1Msg(peer)
// A client that has an edit of its own: SyncStep2 answering the server's (base) state vector.
{
  const d = newDoc(12)
  Y.applyUpdate(d, baseUpdate)
  const t = d.getText('content')
  d.transact(() => { t.insert(0, '# Title\n'); t.delete(10, 3) })
  d.transact(() => t.format(0, 7, { header: 1 }))
  sync['step2_edits_over_base'] = step2Msg(d, Y.encodeStateVector(base))
}
// A SyncStep2 carrying a whole document of its own (new roots of every kind).
{
  const d = newDoc(13)
  const t = d.getText('content')
  const m = d.getMap('settings')
  const a = d.getArray('list')
  d.transact(() => {
    t.insert(0, 'fresh 文書 ✍️')
    m.set('theme', 'dark')
    m.set('size', 12.5)
    m.set('flags', { a: true, b: null, c: [1, 'x', false] })
    a.push([1, 2, 3])
  })
  d.transact(() => { a.delete(1, 1); t.delete(0, 1) })
  sync['step2_full_doc'] = step2Msg(d, new Uint8Array([0]))
}
// An empty SyncStep2 (what a client with nothing new answers).
sync['step2_empty'] = step2Msg(newDoc(14), Y.encodeStateVector(newDoc(14)))

const edit = (clientID, fn) => {
  const d = newDoc(clientID)
  Y.applyUpdate(d, baseUpdate)
  return captured(d, fn)
}
sync['update_insert_text'] = updateMsg(edit(20, (d) => d.getText('content').insert(3, 'lo, he')))
sync['update_insert_emoji_cjk'] = updateMsg(edit(21, (d) => {
  const t = d.getText('content')
  t.insert(t.toString().indexOf('好'), '🌏中文')
}))
sync['update_delete_range'] = updateMsg(edit(22, (d) => d.getText('content').delete(4, 12)))
sync['update_delete_across_surrogates'] = updateMsg(edit(23, (d) => {
  const t = d.getText('content')
  t.delete(t.toString().indexOf('🎉'), 6)
}))
sync['update_format'] = updateMsg(edit(24, (d) => {
  const t = d.getText('content')
  t.format(2, 10, { italic: true, color: '#ff0000' })
  t.format(4, 2, { italic: null })
}))
sync['update_embed'] = updateMsg(edit(25, (d) => {
  const t = d.getText('content')
  t.insertEmbed(5, { image: 'https://example.invalid/a.png' })
  t.insert(6, 'link', { link: 'https://example.invalid' })
}))
sync['update_map_values'] = updateMsg(edit(26, (d) => {
  const m = d.getMap('meta')
  m.set('title', 'Renamed')
  m.set('count', 42)
  m.set('ratio', -0.25)
  m.set('big', 2n ** 60n)
  m.set('bin', new Uint8Array([0, 1, 2, 255]))
  m.set('nested', { a: { b: { c: [1, [2, [3]]] } } })
  m.set('undef', undefined)
  m.delete('rev')
}))
sync['update_array_nested_types'] = updateMsg(edit(27, (d) => {
  const a = d.getArray('items')
  const inner = new Y.Map()
  const innerText = new Y.Text('inner ✨')
  const innerArr = new Y.Array()
  a.insert(1, [inner, innerText, innerArr])
  inner.set('k', 'v')
  innerArr.push(['x', 1])
  a.delete(0, 1)
}))
sync['update_xml'] = updateMsg(edit(28, (d) => {
  const frag = d.getXmlFragment('prosemirror')
  const p = new Y.XmlElement('paragraph')
  p.setAttribute('align', 'left')
  const txt = new Y.XmlText('para 段落')
  p.insert(0, [txt])
  frag.insert(0, [p, new Y.XmlElement('hr')])
  txt.format(0, 4, { strong: {} })
}))
sync['update_subdoc'] = updateMsg(edit(29, (d) => {
  const sub = new Y.Doc({ guid: 'sub-doc-1' })
  d.getMap('subdocs').set('child', sub)
}))
// An update that depends on edits the server never saw: yrs keeps it pending.
{
  const a = newDoc(30)
  Y.applyUpdate(a, baseUpdate)
  a.getText('content').insert(0, 'unseen ')
  const b = newDoc(31)
  Y.applyUpdate(b, fullState(a))
  const u = captured(b, (d) => d.getText('content').insert(3, 'XYZ'))
  sync['update_pending_missing_dep'] = updateMsg(u)
}
// Several clients' updates merged, and an undo (deletes plus re-inserts).
{
  const u1 = edit(32, (d) => d.getText('content').insert(0, 'A'))
  const u2 = edit(33, (d) => d.getText('content').insert(0, 'B'))
  sync['update_merged'] = updateMsg(Y.mergeUpdates([u1, u2]))
  const d = newDoc(34)
  Y.applyUpdate(d, baseUpdate)
  const t = d.getText('content')
  const um = new Y.UndoManager(t, { captureTimeout: 0 })
  t.insert(0, 'undo me ')
  um.stopCapturing()
  t.delete(20, 5)
  sync['update_undo'] = updateMsg(captured(d, () => { um.undo(); um.undo() }))
}
// A concurrent edit pair: both insert at the same place and delete overlapping ranges.
sync['update_concurrent_delete'] = updateMsg(edit(35, (d) => {
  const t = d.getText('content')
  t.delete(0, t.length)
  t.insert(0, 'replaced entirely')
}))

// Awareness.
{
  const d = newDoc(40)
  const aw = new awarenessProtocol.Awareness(d)
  aw.setLocalState({ user: { name: 'Ada', color: '#30bced' }, cursor: null })
  sync['awareness_user'] = awarenessMsg(aw, [40])
  aw.setLocalStateField('cursor', { anchor: { type: null, tname: 'content', item: { client: 1, clock: 5 }, assoc: 0 }, head: { client: 1, clock: 9 } })
  sync['awareness_cursor'] = awarenessMsg(aw, [40])
  aw.setLocalState(null)
  sync['awareness_removed'] = awarenessMsg(aw, [40])
  aw.destroy()
  const d2 = newDoc(41)
  const aw2 = new awarenessProtocol.Awareness(d2)
  aw2.setLocalState({ user: { name: '李雷 🐉', colorLight: '#30bced33' }, ünïcode: 'ok', n: 1.5e300, list: [true, false, null] })
  // Relayed states of other clients, as the server forwards them.
  aw2.states.set(42, { user: { name: 'Bob' } })
  aw2.meta.set(42, { clock: 7, lastUpdated: 0 })
  sync['awareness_many_clients'] = awarenessMsg(aw2, [41, 42])
  aw2.destroy()
}
sync['query_awareness'] = Uint8Array.of(MSG_QUERY_AWARENESS)
sync['auth_permission_denied'] = frame((e) => {
  encoding.writeVarUint(e, MSG_AUTH)
  encoding.writeVarUint(e, 0)
  encoding.writeVarString(e, 'no access')
})
// More than one message in a frame (the protocol allows it; stock clients send one).
sync['multi_step1_awareness_update'] = concat(
  sync['step1_base'], sync['awareness_user'], sync['update_insert_text'], sync['query_awareness'])

// ---- Text edit bodies --------------------------------------------------------------------
const baseText = base.getText('content').toString()
const u16 = (s) => s.length // JS strings count UTF-16 units
const at = (needle) => baseText.indexOf(needle)
const textEdit = {
  insert_start: { ops: [{ insert: 'Hello', at: 0 }] },
  insert_end: { key: 'content', ops: [{ insert: ' the end ✅', at: u16(baseText) }] },
  insert_after_emoji: { ops: [{ insert: '!', at: at('👋') + 2 }] },
  insert_inside_surrogate: { ops: [{ insert: '!', at: at('👋') + 1 }] },
  insert_cjk_combining: { ops: [{ insert: '漢字 ñ n\u0303 🇫🇷', at: at('你') }] },
  delete_range: { ops: [{ delete: 5, at: 0 }] },
  delete_emoji: { ops: [{ delete: 2, at: at('𝄞') }] },
  delete_splitting_pair: { ops: [{ delete: 1, at: at('𝄞') }] },
  delete_out_of_range: { ops: [{ delete: 1000, at: 3 }] },
  replace_small_change: { ops: [{ replace: baseText.replace('café', 'cafe') }] },
  replace_emoji_variant: { ops: [{ replace: baseText.replace('👋🏽', '👋🏿') }] },
  replace_whole: { ops: [{ replace: '全く新しいテキスト 🆕\n' }] },
  replace_empty: { ops: [{ replace: '' }] },
  mixed_batch: {
    ops: [
      { insert: '>> ', at: 0 },
      { delete: 3, at: 3 },
      { replace: 'line one\nline two 🧪\n' },
      { insert: '\u0301', at: 4 },
      { delete: 2, at: 18 },
    ],
  },
  other_key_new_root: { key: 'notes', ops: [{ insert: 'a note 🗒️', at: 0 }] },
  key_not_text: { key: 'meta', ops: [{ insert: 'x', at: 0 }] },
  empty_ops: { ops: [] },
  unknown_field: { ops: [{ insert: 'x', at: 0 }], extra: 1 },
  op_unknown_field: { ops: [{ insert: 'x', at: 0, len: 2 }] },
  negative_position: { ops: [{ delete: 1, at: -1 }] },
  max_position: { ops: [{ insert: 'x', at: 4294967295 }] },
}

// ---- Write -------------------------------------------------------------------------------
const out = (sub) => {
  const dir = join(here, sub)
  mkdirSync(dir, { recursive: true })
  for (const f of readdirSync(dir)) rmSync(join(dir, f))
  return dir
}
mkdirSync(join(here, 'base'), { recursive: true })
writeFileSync(join(here, 'base', 'base_doc.bin'), baseUpdate)
const syncDir = out('seeds/sync_message')
for (const [name, bytes] of Object.entries(sync)) {
  if (bytes.length > 10_000) throw new Error(`${name} is ${bytes.length} bytes`)
  writeFileSync(join(syncDir, `${name}.bin`), bytes)
}
const textDir = out('seeds/text_edit')
for (const [name, body] of Object.entries(textEdit)) {
  writeFileSync(join(textDir, `${name}.json`), JSON.stringify(body))
}
console.log(`base: ${baseUpdate.length} bytes, text ${JSON.stringify(baseText)}`)
console.log(`${Object.keys(sync).length} sync seeds, ${Object.keys(textEdit).length} text seeds`)
