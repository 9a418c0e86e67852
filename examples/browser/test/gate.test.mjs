// node --test: the page's hedge rules (src/gate.js), as tables over the
// clock. Times are ms; a fetch begins at t0 = 1000.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { announceFetch, capHedges, capMove, capWindow, originJoin, pickPeer } from '../src/gate.js'

const MiB = 1 << 20

// base is a fetch that peers take part in and that has had nothing yet:
// peerTimeout 200 ms, 4 leaves at once, the origin not measured.
const base = {
  now: 1000,
  t0: 1000,
  peerDelivered: false,
  held: false,
  firstPeerAt: 0,
  lastPeer: 0,
  peerBlocks: 0,
  peerBytes: 0,
  pace: null,
  typicalPace: null,
  originLeafMs: null,
  peerTimeout: 200,
  concurrency: 4,
  leafBytes: MiB,
  servingAt: null,
  stallTimeout: 2000
}

// delivered is base after peers delivered n blocks, the first at first
// and then one every gap ms.
function delivered (n, first, gap) {
  return { ...base, peerDelivered: true, firstPeerAt: first, lastPeer: first + (n - 1) * gap, peerBlocks: n, peerBytes: n * MiB }
}

test('originJoin before the first peer block', () => {
  const cases = [
    { name: 'waits for peerTimeout', s: { now: 1100 }, want: { at: 1200 } },
    { name: 'joins at peerTimeout', s: { now: 1200 }, want: { why: 'first' } },
    { name: 'an origin leaf slower than peerTimeout is waited for', s: { now: 1250, originLeafMs: 300 }, want: { at: 1300 } },
    { name: 'a known pace within the origin\'s is waited for 1.5 blocks', s: { now: 1250, pace: 400, originLeafMs: 100 }, want: { at: 1600 } },
    { name: 'then the origin joins', s: { now: 1600, pace: 400, originLeafMs: 100 }, want: { why: 'first' } },
    // 4 blocks per 1000 ms is under half the origin's 1 per 100 ms: the
    // pace does not hold the origin back.
    { name: 'a pace slower than half the origin is ignored', s: { now: 1200, pace: 1000, originLeafMs: 100 }, want: { why: 'first' } },
    { name: 'a known pace with the origin not measured is waited for', s: { now: 1200, pace: 1000 }, want: { at: 2500 } },
    // No provider of this fetch measured: the page's typical pace stands
    // for it, under the same rule (before, the origin joined at 1200).
    { name: 'the typical pace is waited for when no provider\'s is known', s: { now: 1250, typicalPace: 400, originLeafMs: 100 }, want: { at: 1600 } },
    { name: 'then the origin joins (typical)', s: { now: 1600, typicalPace: 400, originLeafMs: 100 }, want: { why: 'first' } },
    { name: 'a typical pace slower than half the origin is ignored', s: { now: 1200, typicalPace: 1000, originLeafMs: 100 }, want: { why: 'first' } },
    { name: 'a provider\'s own pace goes before the typical one', s: { now: 1200, pace: 1000, typicalPace: 400, originLeafMs: 100 }, want: { why: 'first' } },
    // A peer said HAVE: the block is on its way; one origin leaf more.
    { name: 'held: one origin leaf more', s: { now: 1350, held: true, originLeafMs: 300 }, want: { at: 1600 } },
    { name: 'held, then the origin joins', s: { now: 1600, held: true, originLeafMs: 300 }, want: { why: 'first' } },
    { name: 'held, the origin not measured: peerTimeout more', s: { now: 1200, held: true }, want: { at: 1400 } }
  ]
  for (const c of cases) {
    assert.deepEqual(originJoin({ ...base, ...c.s }), c.want, c.name)
  }
})

test('originJoin after the first peer block', () => {
  const cases = [
    // one block at 1050: stalled after peerTimeout without another.
    { name: 'waits peerTimeout after the last block', s: { ...delivered(1, 1050, 0), now: 1200 }, want: { at: 1250 } },
    { name: 'stalled after peerTimeout', s: { ...delivered(1, 1050, 0), now: 1250 }, want: { why: 'stall' } },
    // three blocks 100 ms apart, 4 at once: 1.5 rounds of 4 blocks at
    // 100 ms is 600 ms after the last (1250).
    { name: 'a slow round is not a stall', s: { ...delivered(3, 1050, 100), now: 1800 }, want: { at: 1850 } },
    { name: 'stalled after 1.5 rounds', s: { ...delivered(3, 1050, 100), now: 1850 }, want: { why: 'stall' } },
    { name: 'a known pace lengthens the stall window', s: { ...delivered(1, 1050, 0), now: 1500, pace: 400 }, want: { at: 1650 } },
    { name: 'the typical pace does not lengthen it', s: { ...delivered(1, 1050, 0), now: 1250, typicalPace: 400 }, want: { why: 'stall' } },
    // 1 MiB in 500 ms from peers against 1 MiB per 100 ms from the
    // origin: under half, after more than peerTimeout.
    { name: 'slow peers', s: { ...delivered(1, 1050, 0), now: 1550, lastPeer: 1500, originLeafMs: 100 }, want: { why: 'slow' } },
    { name: 'not slow before peerTimeout of peer blocks', s: { ...delivered(1, 1050, 0), now: 1200, originLeafMs: 100 }, want: { at: 1250 } },
    // 4 MiB in 400 ms (10 MiB/s) against 20 MiB/s from the origin: half,
    // not slow; looked at again within 100 ms.
    { name: 'peers at half the origin keep it out', s: { ...delivered(4, 1050, 100), now: 1450, originLeafMs: 50 }, want: { at: 1550 } }
  ]
  for (const c of cases) {
    assert.deepEqual(originJoin({ ...base, ...c.s }), c.want, c.name)
  }
})

test('capWindow', () => {
  assert.equal(capWindow(2000, 0), 2000)
  assert.equal(capWindow(2000, 500), 2000)
  assert.equal(capWindow(2000, 900), 2700)
})

test('capHedges', () => {
  const s = { now: 10000, asked: 8000, win: 2000, capMax: 15000 }
  const cases = [
    { name: 'nobody asked delivered', s: { lastBlocks: [] }, want: true },
    { name: 'a peer asked delivered within the window', s: { lastBlocks: [-Infinity, 9000] }, want: false },
    { name: 'the last block is as old as the window', s: { lastBlocks: [8000] }, want: true },
    { name: 'delivering, but capMax after the ask', s: { lastBlocks: [9900], asked: -5000 }, want: true }
  ]
  for (const c of cases) {
    assert.equal(capHedges({ ...s, ...c.s }), c.want, c.name)
  }
})

test('announceFetch: who tells the mesh it is fetching a root', () => {
  const cases = [
    { name: 'held: never', s: { held: true, provs: [], seed: 'S', canOrigin: true }, want: false },
    { name: 'no provider, from the origin', s: { held: false, provs: [], seed: 'S', canOrigin: true }, want: true },
    { name: 'no provider, no origin: nothing to fetch from', s: { held: false, provs: [], seed: 'S', canOrigin: false }, want: false },
    // Before, a fetch from other tabs never announced: a crowd's later
    // tabs all asked the first holders.
    { name: 'from tabs, the seed holding nothing', s: { held: false, provs: ['T1', 'T2'], seed: 'S', canOrigin: true }, want: true },
    { name: 'from tabs, without an origin', s: { held: false, provs: ['T1'], seed: 'S', canOrigin: false }, want: true },
    { name: 'from tabs, no seed connected', s: { held: false, provs: ['T1'], seed: null, canOrigin: true }, want: true },
    { name: 'the seed holds it: the seed serves', s: { held: false, provs: ['T1', 'S'], seed: 'S', canOrigin: true }, want: false },
    // Before, a seed (or an app the page dials as its seed) fetching the
    // root counted as holding it: the page did not join its stripe.
    { name: 'the seed is fetching it: a stripe with it', s: { held: false, provs: ['S'], fetchers: ['S'], seed: 'S', canOrigin: true }, want: true },
    { name: 'the seed is fetching it, others hold it', s: { held: false, provs: ['T1', 'S'], fetchers: ['S'], seed: 'S', canOrigin: true }, want: true }
  ]
  for (const c of cases) assert.equal(announceFetch(c.s), c.want, c.name)
})

test('capHedges: a block said to be on its way counts as delivering', () => {
  // The caller puts the time of the HAVE among lastBlocks.
  assert.equal(capHedges({ now: 5000, asked: 1000, win: 2000, capMax: 15000, lastBlocks: [-Infinity, 4000] }), false)
  assert.equal(capHedges({ now: 5000, asked: 1000, win: 2000, capMax: 15000, lastBlocks: [-Infinity, 2000] }), true)
})

test('originJoin with a holder serving this page (the seed, busy)', () => {
  const cases = [
    // It sent this page a block at 900 (another fetch): one origin leaf
    // more for the first block (before: the origin joined at 1300).
    { name: 'first: one origin leaf more', s: { now: 1300, originLeafMs: 300, servingAt: 900 }, want: { at: 1600 } },
    { name: 'first: then the origin joins', s: { now: 1600, originLeafMs: 300, servingAt: 900 }, want: { why: 'first' } },
    { name: 'first: a holder silent for stallTimeout is not serving', s: { now: 1300, originLeafMs: 300, servingAt: -1000 }, want: { why: 'first' } },
    // One block at 1050 (before: stalled at 1250).
    { name: 'stall: one origin leaf more', s: { ...delivered(1, 1050, 0), now: 1250, originLeafMs: 100, servingAt: 1050 }, want: { at: 1350 } },
    { name: 'stall: then the origin joins', s: { ...delivered(1, 1050, 0), now: 1350, originLeafMs: 100, servingAt: 1050 }, want: { why: 'stall' } },
    // Its block to another fetch of this page at 1400 shows it is up.
    { name: 'stall: counted from its last block to this page', s: { ...delivered(1, 1050, 0), now: 1600, originLeafMs: 100, servingAt: 1400 }, want: { at: 1700 } },
    // Two blocks 100 ms apart, then 450 ms without: slow by the rate of
    // two blocks (before), not yet by Go's window of four.
    { name: 'slow: two blocks are not a rate', s: { ...delivered(2, 1050, 100), now: 1600, originLeafMs: 100, servingAt: 1500 }, want: { at: 2200 } },
    { name: 'slow: four blocks are', s: { ...delivered(4, 1050, 100), now: 1900, originLeafMs: 50, servingAt: 1350 }, want: { why: 'slow' } }
  ]
  for (const c of cases) {
    assert.deepEqual(originJoin({ ...base, ...c.s }), c.want, c.name)
  }
  // Without the holder the same fetches let the origin in.
  assert.deepEqual(originJoin({ ...base, now: 1300, originLeafMs: 300 }), { why: 'first' })
  assert.deepEqual(originJoin({ ...base, ...delivered(1, 1050, 0), now: 1250, originLeafMs: 100 }), { why: 'stall' })
  assert.deepEqual(originJoin({ ...base, ...delivered(2, 1050, 100), now: 1600, originLeafMs: 100 }), { why: 'slow' })
})

test('capMove: a leaf a slow tab has not sent goes to the serving seed, not the origin', () => {
  const cases = [
    { name: 'asked of a tab: move to the seed', s: { asked: ['T1'], coming: false, serving: 'S' }, want: 'S' },
    { name: 'asked of the seed already: the origin', s: { asked: ['T1', 'S'], coming: false, serving: 'S' }, want: null },
    { name: 'a peer said HAVE: on its way, not moved', s: { asked: ['T1'], coming: true, serving: 'S' }, want: null },
    { name: 'no holder serving: the origin', s: { asked: ['T1'], coming: false, serving: null }, want: null }
  ]
  for (const c of cases) assert.equal(capMove(c.s), c.want, c.name)
})

test('pickPeer: the fastest, ties to the seed', () => {
  const none = new Map()
  const last = () => 0.99 // a random pick would take the last of the ties
  const cases = [
    { name: 'nobody measured: the seed', s: { ok: ['T1', 'S', 'T2'], outstanding: none, peerMs: none, typical: 100, seed: 'S', rand: last }, want: 'S' },
    { name: 'nobody measured, no seed among them: at random', s: { ok: ['T1', 'T2'], outstanding: none, peerMs: none, typical: 100, seed: 'S', rand: last }, want: 'T2' },
    { name: 'a tab measured faster than the seed', s: { ok: ['T1', 'S'], outstanding: none, peerMs: new Map([['T1', 50], ['S', 200]]), typical: 100, seed: 'S', rand: last }, want: 'T1' },
    { name: 'the seed busy with this page\'s wants', s: { ok: ['T1', 'S'], outstanding: new Map([['S', 3]]), peerMs: none, typical: 100, seed: 'S', rand: last }, want: 'T1' },
    { name: 'none', s: { ok: [], outstanding: none, peerMs: none, typical: 100, seed: 'S', rand: last }, want: null }
  ]
  for (const c of cases) assert.equal(pickPeer(c.s), c.want, c.name)
})
