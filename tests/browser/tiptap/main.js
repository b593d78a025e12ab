// A stock Tiptap 3 editor collaborating through @hocuspocus/provider, as a Tiptap app would set it
// up. The page URL names the Tandem server, the document and the person:
// index.html?server=ws://HOST:PORT/ws&doc=NAME&user=NAME&color=%23RRGGBB. The bundle (built by build.mjs)
// exposes `window.fixture` so the browser scenario can read the editor's state.

import { Editor } from '@tiptap/core'
import StarterKit from '@tiptap/starter-kit'
import Collaboration from '@tiptap/extension-collaboration'
import CollaborationCaret from '@tiptap/extension-collaboration-caret'
import { HocuspocusProvider } from '@hocuspocus/provider'
import * as Y from 'yjs'

const params = new URLSearchParams(window.location.search)
const name = params.get('doc')
const user = { name: params.get('user') ?? 'anonymous', color: params.get('color') ?? '#1e88e5' }
const status = document.querySelector('#status')
const show = (state) => {
  status.dataset.state = state
  status.textContent = state
}

const ydoc = new Y.Doc()
const provider = new HocuspocusProvider({
  url: params.get('server'),
  name,
  document: ydoc,
  onStatus: ({ status }) => show(status),
  onSynced: ({ state }) => { if (state) show('synced') }
})

const editor = new Editor({
  element: document.querySelector('#editor'),
  extensions: [
    // Collaboration brings its own undo history; Tiptap asks for StarterKit's to be off.
    StarterKit.configure({ undoRedo: false }),
    Collaboration.configure({ document: ydoc }),
    CollaborationCaret.configure({ provider, user })
  ]
})

window.fixture = { editor, provider, ydoc, Y }
