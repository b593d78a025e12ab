// Hocuspocus as a benchmark reference: its stock server with no extensions (nothing stored),
// on the loopback address and the port given as the first argument.
import { Server } from '@hocuspocus/server'

const port = Number(process.argv[2] || 1234)
const server = new Server({ port, address: '127.0.0.1', quiet: true })
await server.listen()
console.log(`hocuspocus listening on 127.0.0.1:${port}`)
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0))
}
