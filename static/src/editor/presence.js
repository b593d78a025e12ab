// The presence bar of Tandem's editor: who is in this document right now, from the awareness
// states of everyone connected, one entry per person with their colour, you first and marked.

const HEX_COLOUR = /^#[0-9a-fA-F]{3,8}$/

// People in the awareness states, one per name, you first, then by name.
function peopleIn (awareness) {
  const self = awareness.clientID
  const byName = new Map()
  for (const [clientID, state] of awareness.getStates()) {
    const user = state?.user
    const name = typeof user?.name === 'string' ? user.name.trim().slice(0, 60) : ''
    if (name === '') continue
    const colour = typeof user.color === 'string' && HEX_COLOUR.test(user.color) ? user.color : '#888888'
    const person = byName.get(name) ?? { name, colour, you: false }
    if (clientID === self) {
      person.you = true
      person.colour = colour
    }
    byName.set(name, person)
  }
  return [...byName.values()].sort((a, b) => (b.you - a.you) || a.name.localeCompare(b.name))
}

function personItem ({ name, colour, you }) {
  const li = document.createElement('li')
  li.className = you ? 'person you' : 'person'
  li.dataset.userName = name
  li.title = you ? `${name} (you)` : name
  const dot = document.createElement('span')
  dot.className = 'dot'
  dot.style.backgroundColor = colour
  dot.setAttribute('aria-hidden', 'true')
  const label = document.createElement('span')
  label.className = 'name'
  label.textContent = name
  li.append(dot, label)
  if (you) {
    const mark = document.createElement('span')
    mark.className = 'you-mark'
    mark.textContent = ' (you)'
    li.append(mark)
  }
  return li
}

// Keeps `list` (a <ul>) showing the people in `awareness`.
export function showPresence (list, awareness) {
  let last = ''
  const render = () => {
    const people = peopleIn(awareness)
    const key = JSON.stringify(people)
    if (key === last) return
    last = key
    list.replaceChildren(...people.map(personItem))
    list.setAttribute('aria-label', `${people.length} ${people.length === 1 ? 'person' : 'people'} in this document`)
  }
  awareness.on('change', render)
  render()
  return render
}
