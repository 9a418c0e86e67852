// node crowd.mjs: opens a crowd of pages for crowd_test.go. It reads one
// JSON line on stdin,
//   {"url": "http://.../index.html?...", "n": 10, "staggerMs": 1000,
//    "paths": ["a.js", ...], "settleMs": 2000, "late": 3, "timeoutMs": 240000}
// opens n pages, each in a context of its own (a tab of its own browser
// profile), page i at i x staggerMs; each page joins, notes when it first
// knows a provider of the first path, fetches every path in order (SHA-256
// of each), and once all pages are done and settleMs has passed, it writes
// one JSON line: {"pages": [{name, openedMs, joinedMs, knownMs, knownFrom,
// fetches: [{path, sha256, stats}], stats}], "late": [...]}, with times in
// ms since the crowd started; "late" are `late` more pages opened one after
// the other once the crowd is done, each fetching the first path only
// (with connectedMs: when its connection to the seed opened, i.e. it joined
// the mesh). It then waits for a line "close" (or stdin's end).
// MESHCDN_CROWD_PROFILE=T3,T7 records those pages' main-thread CPU profile
// (V8's sampling profiler, 1 ms) from load to the end of their fetches,
// written as <name>.cpuprofile to MESHCDN_CROWD_PROFILE_DIR (default the
// system's temporary directory); Chromium's DevTools open it.
import { createInterface } from 'node:readline'
import { launchBrowser } from './browser.mjs'

const rl = createInterface({ input: process.stdin })
const lines = rl[Symbol.asyncIterator]()
const cfg = JSON.parse((await lines.next()).value)
const browser = await launchBrowser()
const own = [] // browsers of single tabs
const t0 = Date.now()
const since = () => Date.now() - t0
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// inPage runs in each page: learn, fetch, hash.
async function inPage (paths) {
  const m = window.meshcdn
  const first = m.manifest.lookup(paths[0])
  const known = m.waitProvider(first.cid, 60_000).then((ps) => ({ ms: Date.now(), ps })).catch(() => null)
  const fetches = []
  for (const p of paths) {
    const r = await m.fetchAsset(m.manifest.lookup(p))
    const h = new Uint8Array(await crypto.subtle.digest('SHA-256', r.bytes))
    fetches.push({ path: p, sha256: Array.from(h, (b) => b.toString(16).padStart(2, '0')).join(''), stats: r.stats })
  }
  const k = await Promise.race([known, new Promise((resolve) => setTimeout(() => resolve(null), 0))])
  return { fetches, knownAt: k?.ms ?? null, knownFrom: k?.ps ?? [] }
}

async function one (i) {
  await sleep(i * cfg.staggerMs)
  const name = `T${i}`
  // Each tab in a browser of its own (a user's machine of its own: its own
  // network process, which runs QUIC and WebRTC), unless MESHCDN_CROWD_SHARED.
  const b = process.env.MESHCDN_CROWD_SHARED ? browser : await launchBrowser()
  if (b !== browser) own.push(b)
  const ctx = await b.newContext()
  const page = await ctx.newPage()
  page.on('pageerror', (e) => process.stderr.write(`[page ${name}] error: ${e.message}\n`))
  if (process.env.MESHCDN_CROWD_CONSOLE) page.on('console', (m) => process.stderr.write(`[page ${name}] ${m.text()}\n`))
  const openedMs = since()
  await page.goto(cfg.url)
  let prof = null
  if ((process.env.MESHCDN_CROWD_PROFILE ?? '').split(',').includes(name)) {
    prof = await ctx.newCDPSession(page)
    await prof.send('Profiler.enable')
    await prof.send('Profiler.setSamplingInterval', { interval: 1000 })
    await prof.send('Profiler.start')
  }
  await page.waitForFunction(() => window.meshcdnReady !== undefined)
  await page.evaluate(() => window.meshcdnReady)
  const joinedMs = since()
  const r = await page.evaluate(inPage, cfg.paths)
  if (prof != null) {
    const { profile } = await prof.send('Profiler.stop')
    const { writeFileSync } = await import('node:fs')
    const { tmpdir } = await import('node:os')
    writeFileSync(`${process.env.MESHCDN_CROWD_PROFILE_DIR ?? tmpdir()}/${name}.cpuprofile`, JSON.stringify(profile))
  }
  return { name, page, openedMs, joinedMs, knownMs: r.knownAt == null ? null : r.knownAt - t0, knownFrom: r.knownFrom, fetches: r.fetches }
}

const timeout = setTimeout(() => {
  process.stderr.write(`crowd.mjs: not done within ${cfg.timeoutMs} ms\n`)
  process.exit(2)
}, cfg.timeoutMs)
const results = await Promise.all(Array.from({ length: cfg.n }, (_, i) => one(i)))
await sleep(cfg.settleMs) // bitswap counts a send once its stream has closed
// Late tabs, one after the other once the crowd holds the site: when does
// each know a holder, and where does its first fetch come from?
const late = []
for (let j = 0; j < (cfg.late ?? 0); j++) {
  const ctx = await browser.newContext()
  const page = await ctx.newPage()
  const openedMs = since()
  await page.goto(cfg.url)
  await page.waitForFunction(() => window.meshcdnReady !== undefined)
  await page.evaluate(() => window.meshcdnReady)
  const joinedMs = since()
  const r = await page.evaluate(async (p) => {
    const m = window.meshcdn
    const a = m.manifest.lookup(p)
    const ps = await m.waitProvider(a.cid, 10_000).catch(() => [])
    const knownAt = ps.length > 0 ? Date.now() : null
    const f = await m.fetchAsset(a)
    const h = new Uint8Array(await crypto.subtle.digest('SHA-256', f.bytes))
    return { knownAt, connectedAt: m.seedConnectedAt ?? null, knownFrom: ps, fetch: { path: p, sha256: Array.from(h, (b) => b.toString(16).padStart(2, '0')).join(''), stats: f.stats } }
  }, cfg.paths[0])
  late.push({ name: `L${j}`, openedMs, joinedMs, connectedMs: r.connectedAt == null ? null : r.connectedAt - t0, knownMs: r.knownAt == null ? null : r.knownAt - t0, knownFrom: r.knownFrom, fetches: [r.fetch] })
  await ctx.close()
}
const pages = []
for (const r of results) {
  const stats = await r.page.evaluate(() => window.meshcdnStats())
  delete stats.fetches // the same as the fetches' own stats
  pages.push({ name: r.name, openedMs: r.openedMs, joinedMs: r.joinedMs, knownMs: r.knownMs, knownFrom: r.knownFrom, fetches: r.fetches, stats })
}
clearTimeout(timeout)
process.stdout.write(JSON.stringify({ pages, late }) + '\n')
for (;;) {
  const l = await lines.next()
  if (l.done || l.value.trim() === 'close') break
}
for (const b of own) await b.close().catch(() => {})
await browser.close().catch(() => {})
process.exit(0)
