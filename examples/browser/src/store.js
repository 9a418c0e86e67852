// A block store with a byte quota: blocks in memory, persisted with the
// Cache API when the page has it, so that a reload does not fetch again.
// Complete roots (assets) are the unit of eviction: when a put would pass
// the quota, the least recently used complete roots that are not being
// fetched are deleted and reported through onDrop (the client sends DROP).
import { BaseBlockstore } from 'blockstore-core'
import { CID } from 'multiformats/cid'
import { verify } from './verify.js'

const CACHE_PREFIX = '/_meshcdn/block/'
const INDEX_URL = '/_meshcdn/roots.json'

export class QuotaStore extends BaseBlockstore {
  constructor ({ quota = 256 << 20, cacheName = 'meshcdn-v1', onDrop = () => {} } = {}) {
    super()
    this.quota = quota
    this.cacheName = cacheName
    this.onDrop = onDrop
    this.blocks = new Map() // cid string -> Uint8Array
    this.used = 0
    this.roots = new Map() // root string -> {cid, blocks: string[], bytes, used}
    this.active = new Set() // roots being fetched or imported: never evicted
    this.notKept = 0
    this.cache = null
    this.writes = new Set() // Cache API writes under way
  }

  // open loads what an earlier visit kept in the Cache API, checking every
  // block against its CID.
  async open () {
    if (typeof caches === 'undefined') return 0
    this.cache = await caches.open(this.cacheName)
    const idx = await this.cache.match(INDEX_URL)
    if (idx == null) return 0
    let restored = 0
    for (const r of await idx.json()) {
      const blocks = []
      let ok = true
      for (const b of r.blocks) {
        const res = await this.cache.match(CACHE_PREFIX + b)
        if (res == null) { ok = false; break }
        const bytes = new Uint8Array(await res.arrayBuffer())
        if (!await verify(CID.parse(b), bytes)) { ok = false; break }
        blocks.push([b, bytes])
      }
      if (!ok || this.used + r.bytes > this.quota) continue
      for (const [b, bytes] of blocks) this.putLocal(b, bytes)
      this.roots.set(r.cid, { cid: CID.parse(r.cid), blocks: r.blocks, bytes: r.bytes, used: Date.now() })
      restored++
    }
    return restored
  }

  putLocal (key, bytes) {
    if (this.blocks.has(key)) return true
    if (this.used + bytes.length > this.quota) this.evict(this.used + bytes.length - this.quota)
    if (this.used + bytes.length > this.quota) { this.notKept++; return false }
    this.blocks.set(key, bytes)
    this.used += bytes.length
    return true
  }

  async put (cid, val) {
    const bytes = await collect(val)
    const key = cid.toString()
    if (this.putLocal(key, bytes) && this.cache != null) {
      // The Cache API write is not waited for here (it took tens of ms a
      // block on a busy machine, on the path of every fetched block);
      // markRoot waits for the writes before the index names the root.
      const w = this.cache.put(CACHE_PREFIX + key, new Response(bytes)).catch(() => {})
      this.writes.add(w)
      w.finally(() => this.writes.delete(w))
    }
    return cid
  }

  async * get (cid) {
    const b = this.blocks.get(cid.toString())
    if (b == null) {
      const err = new Error(`block ${cid} not found`)
      err.name = 'NotFoundError'
      throw err
    }
    yield b
  }

  block (cid) { return this.blocks.get(cid.toString()) }

  has (cid) { return this.blocks.has(cid.toString()) }

  async delete (cid) {
    const key = cid.toString()
    const b = this.blocks.get(key)
    if (b == null) return
    this.blocks.delete(key)
    this.used -= b.length
    if (this.cache != null) await this.cache.delete(CACHE_PREFIX + key).catch(() => {})
  }

  async * getAll () {
    for (const [k, v] of this.blocks) yield { cid: CID.parse(k), bytes: (function * () { yield v })() }
  }

  // holds reports whether every block of root is here.
  holds (root) { return this.roots.has(root.toString()) }

  // markRoot records that root is complete, made of blocks.
  async markRoot (root, blocks) {
    const keys = blocks.map((c) => c.toString())
    const bytes = keys.reduce((n, k) => n + (this.blocks.get(k)?.length ?? 0), 0)
    if (!keys.every((k) => this.blocks.has(k))) return false
    this.roots.set(root.toString(), { cid: root, blocks: keys, bytes, used: Date.now() })
    await Promise.all([...this.writes])
    await this.saveIndex()
    return true
  }

  touch (root) {
    const r = this.roots.get(root.toString())
    if (r != null) r.used = Date.now()
  }

  heldRoots () { return [...this.roots.values()].map((r) => r.cid) }

  evict (need) {
    const victims = [...this.roots.values()]
      .filter((r) => !this.active.has(r.cid.toString()))
      .sort((a, b) => a.used - b.used)
    const dropped = []
    let freed = 0
    for (const r of victims) {
      if (freed >= need) break
      this.roots.delete(r.cid.toString())
      const stillUsed = new Set([...this.roots.values()].flatMap((o) => o.blocks))
      for (const k of r.blocks) {
        if (stillUsed.has(k)) continue
        const b = this.blocks.get(k)
        if (b == null) continue
        this.blocks.delete(k)
        this.used -= b.length
        freed += b.length
        this.cache?.delete(CACHE_PREFIX + k).catch(() => {})
      }
      dropped.push(r.cid)
    }
    if (dropped.length > 0) {
      this.saveIndex()
      this.onDrop(dropped)
    }
  }

  async saveIndex () {
    if (this.cache == null) return
    const idx = [...this.roots.values()].map((r) => ({ cid: r.cid.toString(), blocks: r.blocks, bytes: r.bytes }))
    await this.cache.put(INDEX_URL, new Response(JSON.stringify(idx), { headers: { 'content-type': 'application/json' } })).catch(() => {})
  }
}

async function collect (val) {
  if (val instanceof Uint8Array) return val
  const parts = []
  for await (const p of val) parts.push(p)
  return concat(parts)
}

export function concat (parts) {
  if (parts.length === 1) return parts[0]
  const n = parts.reduce((s, p) => s + p.length, 0)
  const out = new Uint8Array(n)
  let off = 0
  for (const p of parts) { out.set(p, off); off += p.length }
  return out
}
