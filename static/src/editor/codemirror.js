// The CodeMirror 6 editor of Tandem's editor page: Markdown with highlighting, line wrapping and a
// readable width, bound to a shared Y.Text so everyone's edits and cursors show up live. Undo and
// redo go through a Y.UndoManager, so they only ever take back your own edits.

import { EditorState, Compartment } from '@codemirror/state'
import {
  EditorView, keymap, drawSelection, dropCursor, highlightSpecialChars, highlightActiveLine, placeholder
} from '@codemirror/view'
import { defaultKeymap } from '@codemirror/commands'
import { LanguageSupport, HighlightStyle, syntaxHighlighting, indentOnInput } from '@codemirror/language'
import { markdownLanguage, markdownKeymap } from '@codemirror/lang-markdown'
import { searchKeymap, highlightSelectionMatches } from '@codemirror/search'
import { tags as t } from '@lezer/highlight'
import { yCollab, yUndoManagerKeymap } from 'y-codemirror.next'

// Markdown without embedded HTML/CSS/JS parsers: highlighting prose does not need them and they
// would triple the page's size.
const markdownSupport = new LanguageSupport(markdownLanguage)

const markdownStyle = HighlightStyle.define([
  { tag: t.heading1, fontSize: '1.6em', fontWeight: '700' },
  { tag: t.heading2, fontSize: '1.35em', fontWeight: '700' },
  { tag: t.heading3, fontSize: '1.15em', fontWeight: '700' },
  { tag: [t.heading4, t.heading5, t.heading6], fontWeight: '700' },
  { tag: t.strong, fontWeight: '700' },
  { tag: t.emphasis, fontStyle: 'italic' },
  { tag: t.strikethrough, textDecoration: 'line-through' },
  { tag: [t.link, t.url], color: 'var(--accent)' },
  { tag: t.monospace, fontFamily: 'var(--mono)', fontSize: '0.92em' },
  { tag: t.quote, color: 'var(--muted)', fontStyle: 'italic' },
  { tag: [t.processingInstruction, t.contentSeparator, t.labelName], color: 'var(--muted)' },
  { tag: t.list, color: 'var(--text)' }
])

const tandemTheme = EditorView.theme({
  '&': { color: 'var(--text)', backgroundColor: 'transparent', fontSize: '17px' },
  '&.cm-focused': { outline: 'none' },
  '.cm-scroller': { fontFamily: 'var(--sans)', lineHeight: '1.6' },
  '.cm-content': { padding: '28px 0 40vh', caretColor: 'var(--text)' },
  '.cm-line': { padding: '0 clamp(14px, 4vw, 40px)' },
  '.cm-cursor, .cm-dropCursor': { borderLeftColor: 'var(--text)', borderLeftWidth: '2px' },
  '&.cm-focused > .cm-scroller > .cm-selectionLayer .cm-selectionBackground, .cm-selectionBackground, .cm-content ::selection': {
    backgroundColor: 'color-mix(in srgb, var(--accent) 28%, transparent)'
  },
  '.cm-activeLine': { backgroundColor: 'color-mix(in srgb, var(--accent) 5%, transparent)' },
  '.cm-placeholder': { color: 'var(--muted)', fontStyle: 'italic' },
  '.cm-panels': { backgroundColor: 'var(--surface)', color: 'var(--text)' },
  // Remote people's name labels stay visible (not only on hover) so you can tell who is where.
  '.cm-ySelectionInfo': {
    opacity: '1',
    fontFamily: 'var(--sans)',
    fontSize: '12px',
    fontWeight: '600',
    lineHeight: '1.3',
    top: '-1.35em',
    padding: '0 4px',
    borderRadius: '3px 3px 3px 0'
  },
  '.cm-ySelectionCaret': { borderLeftWidth: '2px', borderRightWidth: '0' }
})

const locked = [EditorState.readOnly.of(true), EditorView.editable.of(false)]

// Creates the editor inside `parent`, bound to `ytext` with remote cursors from `awareness`;
// `readOnly` shows the text and everyone's changes but takes no typing.
// Returns the view and a function that turns editing off or back on.
export function createEditor ({ parent, ytext, awareness, undoManager, readOnly = false }) {
  const editable = new Compartment()
  const hint = readOnly
    ? 'Nothing here yet. What others write appears here as they type.'
    : 'Start typing. Markdown works: # Heading, **bold**, _italic_, - lists, `code`.'
  const state = EditorState.create({
    doc: ytext.toString(),
    extensions: [
      keymap.of([...yUndoManagerKeymap, ...markdownKeymap, ...searchKeymap, ...defaultKeymap]),
      highlightSpecialChars(),
      drawSelection(),
      dropCursor(),
      highlightActiveLine(),
      highlightSelectionMatches(),
      indentOnInput(),
      EditorState.allowMultipleSelections.of(true),
      EditorView.lineWrapping,
      EditorView.contentAttributes.of({ spellcheck: 'true', autocorrect: 'on', autocapitalize: 'sentences', 'aria-label': 'Document text' }),
      markdownSupport,
      syntaxHighlighting(markdownStyle),
      placeholder(hint),
      tandemTheme,
      editable.of(readOnly ? locked : []),
      yCollab(ytext, awareness, { undoManager })
    ]
  })
  const view = new EditorView({ state, parent })
  const setEditable = (on) => view.dispatch({
    effects: editable.reconfigure(on ? [] : locked)
  })
  return { view, setEditable }
}
