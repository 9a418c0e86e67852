// The page: reads its settings from the query string (or from the
// meshcdn.json the seed serves beside it), joins the mesh and shows what it
// fetched and from where. window.meshcdn is the client (tests drive it);
// window.meshcdnStats() returns its counters.
import { CID } from 'multiformats/cid'
import { createMesh } from './client.js'
import { coalesce, trimList } from './ui.js'

const $ = (id) => document.getElementById(id)
const q = new URLSearchParams(location.search)
const fmt = (n) => n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1 << 20)).toFixed(2)} MiB`

// logLines is how many lines the page's log keeps.
const logLines = 200

function log (line) {
  const li = document.createElement('li')
  li.textContent = `${new Date().toISOString().slice(11, 23)} ${line}`
  $('log').prepend(li)
  trimList($('log'), logLines)
  console.log(`[meshcdn] ${line}`)
}

async function settings () {
  let cfg = {}
  if (!q.has('seed')) {
    const res = await fetch('meshcdn.json').catch(() => null)
    if (res?.ok) cfg = await res.json()
  }
  const seeds = q.getAll('seed').flatMap((s) => s.split(',')).filter(Boolean)
  return {
    name: q.get('name') ?? cfg.name,
    seeds: seeds.length > 0 ? seeds : (cfg.addrs ?? []),
    manifest: q.get('manifest') ?? cfg.manifest ?? null,
    quota: q.has('quota-mib') ? Number(q.get('quota-mib')) * (1 << 20) : undefined,
    summaryInterval: q.has('summary-ms') ? Number(q.get('summary-ms')) : undefined,
    peerTimeout: q.has('peer-timeout-ms') ? Number(q.get('peer-timeout-ms')) : undefined,
    stallTimeout: q.has('stall-timeout-ms') ? Number(q.get('stall-timeout-ms')) : undefined,
    cacheName: q.get('cache') ?? undefined,
    // Dial desktop apps on the LAN (lan.js); ?lan-prefer=webrtc-direct
    // (or webtransport) tries that transport's addresses first.
    lan: q.get('lan') === 'off' ? false : { prefer: q.get('lan-prefer') ?? undefined },
    fetch: q.getAll('fetch')
  }
}

function render (m) {
  const s = m.stats
  $('peer').textContent = fmt(s.peerBytes)
  $('origin').textContent = fmt(s.originBytes)
  $('local').textContent = fmt(s.localBytes)
  $('served').textContent = fmt(s.servedBytes)
  const total = s.peerBytes + s.originBytes
  $('offload').textContent = total === 0 ? '-' : `${(100 * s.peerBytes / total).toFixed(1)} %`
  $('rows').replaceChildren(...s.fetches.map((f) => {
    const tr = document.createElement('tr')
    for (const v of [f.path ?? f.cid, fmt(f.size ?? 0), f.origin, fmt(f.peerBytes), fmt(f.originBytes), `${f.ms} ms`, Object.keys(f.peers).map((p) => p.slice(-8)).join(' ')]) {
      const td = document.createElement('td')
      td.textContent = v
      tr.append(td)
    }
    return tr
  }))
  $('conns').replaceChildren(...m.connections().map((c) => {
    const li = document.createElement('li')
    li.textContent = `${c.peer.slice(-8)} ${c.addr}${c.limited ? ' (relayed, limited)' : ''}`
    return li
  }))
  $('held').textContent = `${m.store.heldRoots().length} assets, ${fmt(m.store.used)} of ${fmt(m.store.quota)}`
}

async function main () {
  const cfg = await settings()
  if (cfg.name == null) throw new Error('no mesh name: pass ?name=... or serve meshcdn.json beside the page')
  $('mesh').textContent = cfg.name
  const m = await createMesh({ ...cfg, log })
  window.meshcdn = m
  window.meshcdnCID = (s) => CID.parse(s) // for tests and scripts
  window.meshcdnStats = () => JSON.parse(JSON.stringify({ ...m.stats, peerId: m.libp2p.peerId.toString(), seed: m.seed?.toString() ?? null, lan: m.lan?.stats ?? null, connections: m.connections(), held: m.store.heldRoots().map(String), used: m.store.used }))
  $('me').textContent = m.libp2p.peerId.toString()
  // At most 4 renders a second, however often the counters change.
  const later = coalesce(() => render(m), 250)
  for (const ev of ['stats', 'peers', 'providers']) m.addEventListener(ev, later)
  render(m)
  log(`peer ${m.libp2p.peerId}; seed ${m.seed ?? 'none'}`)
  if (cfg.manifest != null) {
    m.manifest = await m.loadManifest(cfg.manifest)
    log(`manifest: ${m.manifest.assets.length} assets`)
    for (const p of cfg.fetch) {
      const a = m.manifest.lookup(p)
      if (a == null) { log(`not in the manifest: ${p}`); continue }
      const { stats } = await m.fetchAsset(a, { keepBytes: false })
      log(`${p}: ${fmt(stats.size)} from ${stats.origin} in ${stats.ms} ms`)
    }
  }
  $('go').addEventListener('submit', async (e) => {
    e.preventDefault()
    const v = $('what').value.trim()
    try {
      const a = m.manifest?.lookup(v) ?? { cid: v }
      const { stats } = await m.fetchAsset(a, { keepBytes: false })
      log(`${v}: ${fmt(stats.size)} from ${stats.origin} in ${stats.ms} ms`)
    } catch (err) { log(`${v}: ${err.message}`) }
  })
  return m
}

window.meshcdnReady = main().catch((err) => {
  log(`error: ${err.message}`)
  $('status').textContent = `error: ${err.message}`
  throw err
}).then((m) => { $('status').textContent = 'joined'; return true })
