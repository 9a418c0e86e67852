// node --test: the page's origin requests (src/origin.js) against a real
// HTTP server on 127.0.0.1: timeouts on headers and on a body that
// trickles, Retry-After on 429 and 503.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import http from 'node:http'
import { OriginError, originFetch, retryAfterMs, retryWait, ORIGIN_DEFAULTS } from '../src/origin.js'

// serve starts a server whose handler is handle(req, res, n) for the n-th
// request (0 first) and returns its URL, the request count and close.
async function serve (handle) {
  let n = 0
  const open = new Set()
  const srv = http.createServer((req, res) => handle(req, res, n++))
  srv.on('connection', (s) => { open.add(s); s.on('close', () => open.delete(s)) })
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${srv.address().port}/f`,
    count: () => n,
    close: () => new Promise((resolve) => { for (const s of open) s.destroy(); srv.close(resolve) })
  }
}

const body = new Uint8Array(100_000).map((_, i) => i % 251)

// trickle writes step bytes of body every ms after the headers.
function trickle (res, step, ms) {
  res.writeHead(200, { 'Content-Length': body.length })
  let off = 0
  const t = setInterval(() => {
    if (res.destroyed) return clearInterval(t)
    res.write(body.subarray(off, off + step))
    off += step
    if (off >= body.length) { clearInterval(t); res.end() }
  }, ms)
  res.on('close', () => clearInterval(t))
}

test('retryAfterMs reads delay-seconds and HTTP dates', () => {
  const now = Date.parse('2026-12-04T12:00:00Z')
  const cases = [
    [null, 0], ['', 0], ['2', 2000], [' 120 ', 120_000], ['0', 0], ['-3', 0], ['soon', 0],
    ['99999999', 86_400_000],
    [new Date(now + 90_000).toUTCString(), 90_000], [new Date(now - 60_000).toUTCString(), 0]
  ]
  for (const [h, want] of cases) assert.equal(retryAfterMs(h, now), want, `retryAfterMs(${JSON.stringify(h)})`)
})

test('retryWait: 429 and 503 only, twice, waits up to 5 s, a quarter of jitter at most', () => {
  const busy = (status, retryAfterMs = 0) => new OriginError('x', { status, retryAfterMs })
  assert.equal(retryWait(busy(503, 2000), 0, ORIGIN_DEFAULTS, () => 0), 2000)
  assert.equal(retryWait(busy(429), 1, ORIGIN_DEFAULTS, () => 0), 1000)
  assert.equal(retryWait(busy(503, 2000), 0, ORIGIN_DEFAULTS, () => 0.999999), 2500)
  assert.equal(retryWait(busy(503), 2), null)
  assert.equal(retryWait(busy(503, 6000), 0), null)
  assert.equal(retryWait(busy(404), 0), null)
  assert.equal(retryWait(new Error('cut'), 0), null)
})

test('a plain answer is read whole', async () => {
  const s = await serve((req, res) => { res.writeHead(200); res.end(body) })
  try {
    const { status, bytes } = await originFetch(s.url)
    assert.equal(status, 200)
    assert.deepEqual(bytes, body)
  } finally { await s.close() }
})

test('no headers within headerTimeoutMs fails the request', async () => {
  const s = await serve(() => {}) // never answers
  try {
    const t = performance.now()
    await assert.rejects(originFetch(s.url, { headerTimeoutMs: 200 }), (err) => err instanceof OriginError && err.timeout === 'no response headers')
    assert.ok(performance.now() - t >= 190)
  } finally { await s.close() }
})

test('a body slower than minProgress per idleTimeoutMs fails; one faster is waited for', async () => {
  // Before: a browser fetch has no timeout; a byte every 50 ms kept the
  // request, and the leaf, waiting for as long as the origin liked. Here
  // the 100,000 bytes must come within 2 windows of 300 ms.
  const slow = await serve((req, res) => trickle(res, 1, 50))
  try {
    const t = performance.now()
    await assert.rejects(originFetch(slow.url, { idleTimeoutMs: 300, minProgress: 50_000 }),
      (err) => err instanceof OriginError && /bytes of body/.test(err.timeout))
    assert.ok(performance.now() - t < 5000)
  } finally { await slow.close() }
  const alive = await serve((req, res) => trickle(res, 8192, 20))
  try {
    const { bytes } = await originFetch(alive.url, { idleTimeoutMs: 300, minProgress: 50_000 })
    assert.deepEqual(bytes, body)
  } finally { await alive.close() }
})

test('a 503 with Retry-After is asked again; a long Retry-After and a 404 are not', async () => {
  const busyOnce = await serve((req, res, n) => {
    if (n === 0) { res.writeHead(503, { 'Retry-After': '1' }); res.end('busy'); return }
    res.writeHead(200); res.end(body)
  })
  try {
    const t = performance.now()
    const { bytes } = await originFetch(busyOnce.url)
    assert.deepEqual(bytes, body)
    assert.equal(busyOnce.count(), 2)
    assert.ok(performance.now() - t >= 990, 'waited the Retry-After')
  } finally { await busyOnce.close() }
  for (const [status, after, wantAfter] of [[503, '60', 60_000], [404, '', 0]]) {
    const s = await serve((req, res) => { res.writeHead(status, after ? { 'Retry-After': after } : {}); res.end() })
    try {
      await assert.rejects(originFetch(s.url), (err) => err instanceof OriginError && err.status === status && err.retryAfterMs === wantAfter)
      assert.equal(s.count(), 1)
    } finally { await s.close() }
  }
})

test('the caller signal ends a request and a Retry-After wait', async () => {
  const s = await serve((req, res) => { res.writeHead(503, { 'Retry-After': '3' }); res.end() })
  try {
    const t = performance.now()
    await assert.rejects(originFetch(s.url, { signal: AbortSignal.timeout(300) }))
    assert.ok(performance.now() - t < 2500, 'did not wait out the Retry-After')
  } finally { await s.close() }
})
