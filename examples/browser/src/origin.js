// The page's origin requests, with the Go side's rules (fetch/origin.go):
// the response headers within headerTimeoutMs, then the body at
// minProgress bytes per idleTimeoutMs at least, over the whole body (a
// trickle of bytes does not keep a request alive), and a 429 or 503 asked again after its
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
    // The body must come at minProgress bytes per idleTimeoutMs at least,
    // checked as a whole (read in one arrayBuffer: a stream read of each
    // chunk on the page's thread cost 10 tabs' crowd a few points of
    // offload).
    const size = Number(res.headers.get('Content-Length'))
    const windows = Number.isFinite(size) && size > 0 ? Math.ceil(size / cfg.minProgress) : 64
    arm(cfg.idleTimeoutMs * windows, `under ${cfg.minProgress} bytes of body in every ${cfg.idleTimeoutMs} ms`)
    return { status: res.status, bytes: new Uint8Array(await res.arrayBuffer()) }
  } catch (err) {
    if (fired !== '' && !(err instanceof OriginError)) throw ac.signal.reason
    throw err
  } finally {
    clearTimeout(timer)
    signal?.removeEventListener('abort', onAbort)
  }
}

function sleep (ms, signal) {
  return new Promise((resolve, reject) => {
    signal?.throwIfAborted()
    const t = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve() }, ms)
    const onAbort = () => { clearTimeout(t); reject(signal.reason) }
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}
