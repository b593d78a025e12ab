// Tandem document names: the rule the server enforces (1–128 characters of A-Z a-z 0-9 . _ -),
// checked in the browser first so a bad name is explained in words instead of a socket that
// never connects.

const DOC_NAME = /^[A-Za-z0-9._-]{1,128}$/

export const DOC_NAME_RULE = 'A document name is 1–128 characters: letters, digits, “.”, “_” or “-” (no spaces).'

// Returns null when `name` is a valid document name, otherwise a sentence saying what is wrong.
export function docNameProblem (name) {
  if (name === '') return 'Type a document name first.'
  if (name.length > 128) return `That name is ${name.length} characters long; ${DOC_NAME_RULE}`
  if (name === '.' || name === '..') return `“${name}” can't be used as a document name. ${DOC_NAME_RULE}`
  if (!DOC_NAME.test(name)) return `“${name}” isn't a valid document name. ${DOC_NAME_RULE}`
  return null
}

// The path of a document's editor page.
export const editorPath = (name) => `/d/${encodeURIComponent(name)}`

// The document name in an editor page's path (/d/{doc}), or null when the path holds none.
export function docNameFromPath (pathname) {
  const prefix = '/d/'
  if (!pathname.startsWith(prefix)) return null
  try {
    return decodeURIComponent(pathname.slice(prefix.length))
  } catch {
    return null
  }
}
