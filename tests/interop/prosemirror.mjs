// Rich-text (ProseMirror) scenarios for run.mjs: a stock Yjs client edits an XmlFragment the way
// Tiptap does (through y-prosemirror), and Tandem's REST API reads and writes the same content
// as ProseMirror JSON. Every comparison is against y-prosemirror's own rendering of the
// client's document, `yXmlFragmentToProsemirrorJSON`.
//
//   pm-read  --url <ws base> --doc <name>   the client builds a rich fragment; the server's
//            GET /content?format=prosemirror must equal the client's rendering, and the JSON
//            view of the root (GET /content?key=default) the client's `toString()`.
//   pm-write --url <ws base> --doc <name>   REST creates the document from ProseMirror JSON;
//            a client reads it, then REST replaces it while the client is connected and the
//            client must see the new content live; a fresh client reads it too.
//
// The HTTP base is the WebSocket base without `/ws` (`ws://h:p/ws` → `http://h:p`).

import { isDeepStrictEqual } from 'node:util'
import * as Y from 'yjs'
import { Schema } from 'prosemirror-model'
import {
  prosemirrorJSONToYXmlFragment,
  yXmlFragmentToProsemirrorJSON,
  yXmlFragmentToProseMirrorRootNode
} from 'y-prosemirror'

const FRAGMENT = 'default'

// A Tiptap-like schema: what its StarterKit and Link extension define, trimmed.
export const schema = new Schema({
  nodes: {
    doc: { content: 'block+' },
    paragraph: { group: 'block', content: 'inline*' },
    heading: { group: 'block', content: 'inline*', attrs: { level: { default: 1 } } },
    bulletList: { group: 'block', content: 'listItem+' },
    orderedList: { group: 'block', content: 'listItem+', attrs: { start: { default: 1 } } },
    listItem: { content: 'paragraph block*' },
    text: { group: 'inline' }
  },
  marks: {
    bold: {},
    italic: {},
    link: { attrs: { href: {}, target: { default: null } }, inclusive: false }
  }
})

const text = (t, marks) => (marks ? { type: 'text', text: t, marks } : { type: 'text', text: t })
const bold = { type: 'bold', attrs: {} }
const italic = { type: 'italic', attrs: {} }
const link = (href) => ({ type: 'link', attrs: { href, target: '_blank' } })
const para = (...content) => ({ type: 'paragraph', content })

// A document as Tandem writes it back: marks with attrs, in name order where they begin
// together, no null attributes.
export const first = {
  type: 'doc',
  content: [
    { type: 'heading', attrs: { level: 1 }, content: [text('Plan 🎉')] },
    para(text('plain, '), text('bold', [bold]), text(' and '), text('both', [bold, italic]), text(' see '),
      text('the site', [link('https://example.com')])),
    {
      type: 'bulletList',
      content: [
        { type: 'listItem', content: [para(text('one'))] },
        {
          type: 'listItem',
          content: [
            para(text('two')),
            { type: 'orderedList', attrs: { start: 3 }, content: [{ type: 'listItem', content: [para(text('nested', [italic]))] }] }
          ]
        }
      ]
    },
    { type: 'paragraph' }
  ]
}

export const second = {
  type: 'doc',
  content: [
    first.content[0],
    para(text('rewritten by REST', [italic])),
    { type: 'heading', attrs: { level: 2 }, content: [text('Ünïcode ', [bold]), text('终', [bold, link('https://b.example')])] },
    first.content[2]
  ]
}

export function prosemirrorScenarios ({ connect, synced, until, onUpdate }) {
  const httpBase = (opts) => opts.urls[0].replace(/^ws/, 'http').replace(/\/ws\/?$/, '')

  async function rest (opts, method, path, body) {
    const response = await fetch(httpBase(opts) + path, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body)
    })
    const raw = await response.text()
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${raw}`)
    return raw === '' ? null : JSON.parse(raw)
  }

  const fragmentOf = (c) => c.doc.getXmlFragment(FRAGMENT)
  const rendered = (c) => yXmlFragmentToProsemirrorJSON(fragmentOf(c))
  // As JSON: ProseMirror builds attributes without a prototype, which a deep comparison would
  // count as a difference.
  const plain = (value) => JSON.parse(JSON.stringify(value))
  const same = (a, b) => isDeepStrictEqual(plain(a), plain(b))

  // Waits until client `c` holds everything `writer` wrote: the server relays a change only once
  // it is stored, so the REST API sees it too.
  const hasAllOf = (c, writer) => until(`${c.name} has ${writer.name}'s edits`, () => {
    const wanted = Y.decodeStateVector(Y.encodeStateVector(writer.doc))
    return [...wanted].every(([client, clock]) => Y.getState(c.doc.store, client) >= clock)
  }, onUpdate(c.doc))

  async function pmRead (opts) {
    const writer = connect(opts, 'tiptap')
    await synced(writer)
    const fragment = fragmentOf(writer)
    prosemirrorJSONToYXmlFragment(schema, first, fragment)
    // Edits as an editor makes them after the first content: a mark that begins inside another
    // (listed after it, although it sorts before it), a link's attributes, a deletion.
    writer.doc.transact(() => {
      const paragraph = fragment.get(1)
      const runs = paragraph.get(0)
      runs.format(0, 5, { italic: {} })
      runs.format(2, 2, { bold: {} })
      runs.delete(5, 2)
      fragment.get(0).setAttribute('level', 2)
    })
    const checker = connect(opts, 'checker')
    await synced(checker)
    await hasAllOf(checker, writer)
    const expected = rendered(writer)
    if (!same(rendered(checker), expected)) throw new Error('the two clients differ')
    const served = await rest(opts, 'GET', `/api/docs/${encodeURIComponent(opts.doc)}/content?format=prosemirror`)
    const xml = await rest(opts, 'GET', `/api/docs/${encodeURIComponent(opts.doc)}/content?key=${FRAGMENT}`)
    // ProseMirror itself accepts what the server gives.
    yXmlFragmentToProseMirrorRootNode(fragment, schema).check()
    return {
      same: same(served, expected),
      served,
      expected,
      sameXml: xml === fragment.toString(),
      xml,
      expectedXml: fragment.toString()
    }
  }

  async function pmWrite (opts) {
    const id = encodeURIComponent(opts.doc)
    await rest(opts, 'POST', '/api/docs', { id: opts.doc, prosemirror: first })
    const reader = connect(opts, 'tiptap')
    await synced(reader)
    await until('the reader has the created content', () => fragmentOf(reader).length > 0, onUpdate(reader.doc))
    const created = rendered(reader)
    // Replaced while the reader is connected: it must see the new content without reconnecting.
    let closes = 0
    reader.provider.on('connection-close', () => { closes++ })
    await rest(opts, 'PUT', `/api/docs/${id}/content?format=prosemirror&key=${FRAGMENT}`, second)
    await until('the reader sees the replacement live', () => same(rendered(reader), second), onUpdate(reader.doc))
    const late = connect(opts, 'late')
    await synced(late)
    await until('a new client reads the replacement', () => same(rendered(late), second), onUpdate(late.doc))
    const served = await rest(opts, 'GET', `/api/docs/${id}/content?format=prosemirror`)
    yXmlFragmentToProseMirrorRootNode(fragmentOf(late), schema).check()
    return {
      createdSame: same(created, first),
      created,
      replacedLive: closes === 0,
      servedSame: same(served, second),
      served
    }
  }

  return { 'pm-read': pmRead, 'pm-write': pmWrite }
}
