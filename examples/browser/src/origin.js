// The page's origin requests, with the Go side's rules (fetch/origin.go):
// the response headers within headerTimeoutMs, then at least minProgress
// bytes of body within each idleTimeoutMs (a trickle of bytes does not
// keep a request alive), and a 429 or 503 asked again after its
// Retry-After (defaultRetryAfterMs without one, plus up to a quarter of
// jitter so that a crowd told the same wait does not come back at once),
// at most `retries` times and only for waits up to maxRetryAfterMs. A
// browser's fetch has no timeout of its own: an origin that accepts and
// says nothing held a leaf, and a fetch no peer could serve, for ever.

export const ORIGIN_DEFAULTS = {
  headerTimeoutMs: 10_000,
  idleTimeoutMs: 10_000,
  minProgress: 16 << 10,
  retries: 2,
  defaultRetryAfterMs: 1000,
  maxRetryAfterMs: 5000
}

// OriginError is an origin request that failed: a status (status, and
// retryAfterMs for a 429 or 503 that said when to come back), or a timeout
// (timeout: what did not come in time).
export class OriginError extends Error {
  constructor (message, { status = 0, retryAfterMs = 0, timeout = '' } = {}) {
    super(message)
    this.name = 'OriginError'
    this.status = status
    this.retryAfterMs = retryAfterMs
    this.timeout = timeout
  }
}

// retryAfterMs reads a Retry-After header, delay-seconds or an HTTP date,
// as the wait from now in ms; 0 when absent, malformed or past.
export function retryAfterMs (h, now = Date.now()) {
  if (h == null) return 0
  h = String(h).trim()
  if (h === '') return 0
  if (/^\d+$/.test(h)) return Math.min(Number(h), 86_400) * 1000
  if (/^-\d+$/.test(h)) return 0
  const at = Date.parse(h)
  return Number.isFinite(at) && at > now ? at - now : 0
}

// retryWait is how long to wait before asking again after err, the
// tries-th retry (0 first), or null when not to.
export function retryWait (err, tries, cfg = ORIGIN_DEFAULTS, random = Math.random) {
  if (!(err instanceof OriginError) || (err.status !== 429 && err.status !== 503) || tries >= cfg.retries) return null
  const d = err.retryAfterMs || cfg.defaultRetryAfterMs
  if (d > cfg.maxRetryAfterMs) return null
  return d + Math.floor(random() * (d / 4 + 1))
}

// originFetch GETs url with headers under the timeouts and retries above
// and returns { status, bytes }. signal ends it (its reason is thrown).
export async function originFetch (url, { headers = {}, signal, ...opts } = {}) {
  const cfg = { ...ORIGIN_DEFAULTS, ...opts }
  for (let tries = 0; ; tries++) {
    try {
      return await originOnce(url, headers, signal, cfg)
    } catch (err) {
      const wait = retryWait(err, tries, cfg)
      if (wait == null) throw err
      await sleep(wait, signal)
    }
  }
}

async function originOnce (url, headers, signal, cfg) {
  signal?.throwIfAborted()
  const ac = new AbortController()
  const onAbort = () => ac.abort(signal.reason)
  signal?.addEventListener('abort', onAbort, { once: true })
  let fired = ''
  let timer = null
  const arm = (ms, what) => {
    clearTimeout(timer)
    timer = setTimeout(() => { fired = `${what} for ${ms} ms`; ac.abort(new OriginError(`origin ${url}: ${fired}`, { timeout: what })) }, ms)
  }
  try {
    arm(cfg.headerTimeoutMs, 'no response headers')
    const res = await fetch(url, { headers, signal: ac.signal })
    if (!res.ok) {
      res.body?.cancel().catch(() => {})
      const retry = res.status === 429 || res.status === 503 ? retryAfterMs(res.headers.get('Retry-After')) : 0
      throw new OriginError(`origin ${url}: HTTP ${res.status}`, { status: res.status, retryAfterMs: retry })
    }
    arm(cfg.idleTimeoutMs, `under ${cfg.minProgress} bytes of body`)
    return { status: res.status, bytes: await readBody(res, cfg, arm) }
  } catch (err) {
    if (fired !== '' && !(err instanceof OriginError)) throw ac.signal.reason
    throw err
  } finally {
    clearTimeout(timer)
    signal?.removeEventListener('abort', onAbort)
  }
}

// readBody reads res's body, re-arming the idle timer each time
// minProgress more bytes have come.
async function readBody (res, cfg, arm) {
  const reader = res.body.getReader()
  const chunks = []
  let size = 0
  let got = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    chunks.push(value)
    size += value.length
    got += value.length
    if (got >= cfg.minProgress) {
      got = 0
      arm(cfg.idleTimeoutMs, `under ${cfg.minProgress} bytes of body`)
    }
  }
  const bytes = new Uint8Array(size)
  let off = 0
  for (const c of chunks) { bytes.set(c, off); off += c.length }
  return bytes
}

function sleep (ms, signal) {
  return new Promise((resolve, reject) => {
    signal?.throwIfAborted()
    const t = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve() }, ms)
    const onAbort = () => { clearTimeout(t); reject(signal.reason) }
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}
