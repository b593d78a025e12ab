// Your name in Tandem's editor: picked in the "Your name" field, remembered in this browser and
// published in awareness (with a colour derived from it) so others see it on your cursor. When
// the page's access token names you, that name (and colour) is used and nothing is asked.

import { NAME_KEY, storedName, rememberName, guestName, cleanName, userFor, tokenUserFor } from '../common/identity.js'

export function setUpYou ({ awareness, field, hint, hintName, pick, fixed = null }) {
  if (fixed) {
    field.closest('label').hidden = true
    hint.hidden = true
    awareness.setLocalStateField('user', tokenUserFor(fixed))
    return { name: () => fixed.name }
  }
  let name = storedName()
  if (name === null) {
    // First visit: appear as a guest until a name is typed, and say so.
    name = guestName()
    hintName.textContent = name
    hint.hidden = false
  }
  const publish = () => awareness.setLocalStateField('user', userFor(name))
  field.value = name
  field.placeholder = 'Your name'

  const commit = () => {
    const next = cleanName(field.value)
    if (next === '') {
      field.value = name // an empty name is not a name: keep the previous one
      return
    }
    field.value = next
    hint.hidden = true
    if (next === name && storedName() === next) return
    name = next
    rememberName(name)
    publish()
  }
  field.addEventListener('change', commit)
  pick.addEventListener('click', () => {
    field.focus()
    field.select()
  })
  field.addEventListener('keydown', (event) => {
    if (event.key === 'Enter') {
      event.preventDefault()
      field.blur()
    } else if (event.key === 'Escape') {
      field.value = name
      field.blur()
    }
  })
  // Another tab of this browser renamed you.
  window.addEventListener('storage', (event) => {
    if (event.key !== NAME_KEY) return
    const next = storedName()
    if (next && next !== name) {
      name = next
      field.value = name
      hint.hidden = true
      publish()
    }
  })

  publish()
  return { name: () => name }
}
