// node --test: striping (src/stripe.js): the Go fetch package's scores and
// owners, and its overdue rule as tables over the clock (times in ms).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { MAX_MEMBERS, Stripe, askOf, cancelOnOrigin, clocks, compareBytes, crowdOf, heard, originLeaf, originRank, overdue, ownLeft, peerBytes, reask, reaskLeaf, stall, stallOrder, stripeScore, stripeOrigin, waitOn, waitedPace } from '../src/stripe.js'

const root = CID.parse('bafybeihcldjer7njjrrxknqh67cestxa7s7jf4nhnp62y6k4twcbahvtc4')

// Peer IDs in the two forms a mesh meets: an Ed25519 key inlined
// (identity multihash, 12D3Koo...) and a sha2-256 one (Qm...).
const ed = '12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp'
const qm = 'QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N'

// crowd makes n distinct Ed25519-form peer IDs (identity multihashes of
// 36 bytes, as js-libp2p and go-libp2p write them), deterministically.
async function crowd (n) {
  const { base58btc } = await import('multiformats/bases/base58')
  const ids = []
  for (let k = 0; k < n; k++) {
    const key = (await sha256.digest(new Uint8Array([k, 7]))).digest
    const mh = new Uint8Array([0x00, 0x24, 0x08, 0x01, 0x12, 0x20, ...key])
    ids.push(base58btc.baseEncode(mh))
  }
  return ids
}

test('stripeScore equals the Go side\'s', () => {
  // Printed by Go: binary.BigEndian.Uint64(sha256.Sum256(root.Bytes() ||
  // []byte(peer.Decode(id)) || uint64_be(i))[:8]), the formula
  // fetch.TestStripeScore holds stripeScore to.
  const cases = [
    [ed, 0, '3cf91ad3e6b0d2c8'], [ed, 1, 'f2d26984de66c64f'], [ed, 7, 'b6d63b84d2240714'], [ed, 1 << 20, 'f0f4bf9c8a0c506a'],
    [qm, 0, '77ce982f76f96ee6'], [qm, 1, '68ec0332f6aa4af8'], [qm, 7, 'd680a110d24d6396'], [qm, 1 << 20, 'e6b8419ab8f32a8c']
  ]
  for (const [id, i, want] of cases) {
    assert.equal(stripeScore(root.bytes, peerBytes(id), i).toString(16).padStart(16, '0'), want, `${id} leaf ${i}`)
  }
})

test('peerBytes and compareBytes order peer IDs as Go does', () => {
  assert.equal(peerBytes(ed).length, 38) // 0x00 0x24, then the 36-byte protobuf key
  assert.equal(peerBytes(qm).length, 34) // 0x12 0x20, then a sha2-256 digest
  assert.ok(compareBytes(peerBytes(ed), peerBytes(qm)) < 0) // 0x00 before 0x12
  assert.ok(compareBytes(new Uint8Array([1]), new Uint8Array([1, 0])) < 0)
  assert.equal(compareBytes(new Uint8Array([1, 2]), new Uint8Array([1, 2])), 0)
})

test('every member computes the same owners; the leaves split about evenly', async () => {
  const ps = await crowd(10)
  const leaves = 1000
  const views = ps.map((self, k) => new Stripe(root.bytes, self, [...ps.slice(k + 1), ...ps.slice(0, k)]))
  const count = new Map()
  for (let i = 0; i < leaves; i++) {
    const o = views[0].owner(i)
    count.set(o, (count.get(o) ?? 0) + 1)
    for (const k of [1, 5, 9]) assert.equal(views[k].owner(i), o, `leaf ${i}`)
    // The owner has the highest score (brute force).
    const best = ps.reduce((a, p) => stripeScore(root.bytes, peerBytes(p), i) > stripeScore(root.bytes, peerBytes(a), i) ? p : a)
    assert.equal(o, best, `leaf ${i}`)
  }
  for (const p of ps) {
    const n = count.get(p) ?? 0
    assert.ok(n >= 70 && n <= 130, `${p} owns ${n} of ${leaves}`)
  }
  // A member that joins takes leaves only for itself.
  const fewer = new Stripe(root.bytes, ps[0], ps.slice(1, 9))
  for (let i = 0; i < leaves; i++) {
    const full = views[0].owner(i)
    if (full !== ps[9]) assert.equal(fewer.owner(i), full, `leaf ${i}`)
  }
  const alone = new Stripe(root.bytes, ps[0], [ps[0]])
  assert.ok(alone.alone())
  assert.equal(alone.owner(7), ps[0])
  assert.ok(new Stripe(root.bytes, ps[0], []).alone())
  assert.ok(!new Stripe(root.bytes, ps[0], [ps[1]]).alone())
})

test('place: the ranking of the members, the owner first', async () => {
  const ps = await crowd(7)
  for (let i = 0; i < 20; i++) {
    const seen = new Set()
    for (const self of ps) {
      const st = new Stripe(root.bytes, self, ps)
      const k = st.place(i)
      assert.ok(!seen.has(k), `leaf ${i}: place ${k} twice`)
      seen.add(k)
      assert.equal(k === 0, st.owner(i) === self)
      const mine = stripeScore(root.bytes, peerBytes(self), i)
      const higher = ps.filter((p) => stripeScore(root.bytes, peerBytes(p), i) > mine).length
      assert.equal(k, higher, `leaf ${i}`)
    }
    assert.equal(seen.size, ps.length)
  }
  // A page not heard yet is no member: it owns nothing, its place is last.
  const out = new Stripe(root.bytes, ps[0], ps.slice(1), false)
  assert.equal(out.place(0), ps.length - 1)
  for (let i = 0; i < 50; i++) assert.notEqual(out.owner(i), ps[0])
  assert.ok(!out.has(ps[0]))
})

test('a tie goes to the greater peer ID bytes', async () => {
  // Scores that tie cannot be made from SHA-256: the stripe is given a
  // constant score.
  const ps = [ed, qm, ...await crowd(3)]
  const st = new Stripe(root.bytes, ed, ps, true, () => 7n)
  const greatest = ps.reduce((a, p) => compareBytes(peerBytes(p), peerBytes(a)) > 0 ? p : a)
  assert.equal(greatest, qm) // 0x12... after 0x00...
  assert.equal(st.owner(3), qm)
  assert.equal(st.place(3), ps.filter((p) => compareBytes(peerBytes(p), peerBytes(ed)) > 0).length)
})

test('heard: a page counts itself in peerTimeout after its announcement', () => {
  assert.deepEqual(heard(null, 5000, 200), { heard: false, at: null })
  assert.deepEqual(heard(1000, 1199, 200), { heard: false, at: 1200 })
  assert.deepEqual(heard(1000, 1200, 200), { heard: true, at: null })
})

test('overdue: the Go side\'s table (fetch.TestOverdue)', () => {
  const t0 = 1000
  const pt = 200
  const leaf = 800
  const cases = [
    ['just asked', { since: t0 }, 0, false, pt + leaf],
    ['nobody has it yet', { since: t0, rank: 1 }, pt + leaf - 1, false, pt + leaf],
    ['its owner sent nothing', { since: t0, rank: 1 }, pt + leaf, true],
    ['third in its owner\'s queue', { since: t0, rank: 3 }, pt + 2 * leaf, false, pt + 3 * leaf],
    ['third, its owner sent nothing', { since: t0, rank: 3 }, pt + 3 * leaf, true],
    ['a peer holds it', { since: t0, held: true }, 10_000, false, null],
    ['its owner is at work', { since: t0, ownerActive: true }, 10_000, false, null],
    ['held, the reader waits', { since: t0, held: true, waitSince: t0 + 1000 }, 1000 + pt + leaf, false, 1000 + 2 * (pt + leaf)],
    ['held, the reader waited too long', { since: t0, held: true, waitSince: t0 + 1000 }, 1000 + 2 * (pt + leaf), true],
    ['not held, the reader waited too long', { since: t0, ownerActive: true, waitSince: t0 + 1000 }, 1000 + pt + leaf, true],
    ['first backup, its owner sent nothing', { since: t0, rank: 1, backup: 1 }, pt + leaf, true],
    ['second backup waits a wave more', { since: t0, rank: 1, backup: 2 }, pt + leaf, false, 2 * (pt + leaf)],
    ['second backup, its turn', { since: t0, rank: 1, backup: 2 }, 2 * (pt + leaf), true],
    ['a far backup waits for its own wave', { since: t0, rank: 1, backup: 40 }, 40 * (pt + leaf) - 1, false, 40 * (pt + leaf)],
    ['a far backup, its wave', { since: t0, rank: 1, backup: 40 }, 40 * (pt + leaf), true],
    ['third backup, the reader waits', { since: t0, ownerActive: true, backup: 3, waitSince: t0 + 1000 }, 1000 + 2 * (pt + leaf), false, 1000 + 3 * (pt + leaf)],
    ['third backup, held, the reader waited', { since: t0, held: true, backup: 3, waitSince: t0 + 1000 }, 1000 + 6 * (pt + leaf), true]
  ]
  for (const [name, a, at, want, next] of cases) {
    const got = overdue({ rank: 0, backup: 0, held: false, ownerActive: false, waitSince: null, ...a }, t0 + at, pt, leaf)
    if (want) assert.deepEqual(got, { due: true }, name)
    else assert.deepEqual(got, { due: false, at: next == null ? null : t0 + next }, name)
  }
})

test('stripeOrigin: which leaves of a striped fetch the origin takes, and when', async () => {
  const [self, other, third] = await crowd(3)
  const st = new Stripe(root.bytes, self, [other, third])
  let mine = -1
  let theirs = -1
  for (let i = 0; (mine < 0 || theirs < 0) && i < 100; i++) {
    if (st.owner(i) === self && mine < 0) mine = i
    if (st.owner(i) !== self && st.place(i) === 1 && theirs < 0) theirs = i
  }
  const pt = 200
  const leaf = 300
  const base = { stripe: st, now: 1000, asked: 1000, held: false, heldAt: null, holder: false, ownerActive: false, waitSince: null, rank: 1, peerTimeout: pt, leaf, originSince: 1000, capWin: 2000 }
  const alone = new Stripe(root.bytes, self, [])
  const cases = [
    ['mine: at once', { i: mine }, { why: 'mine' }],
    ['mine, a holder connected: peers get peerTimeout', { i: mine, holder: true, now: 1100 }, { at: 1200 }],
    ['mine, a holder connected, then the origin', { i: mine, holder: true, now: 1200 }, { why: 'mine' }],
    // A peer said HAVE of the page's own leaf: it is on its way, and it
    // goes by the overdue rule like another's (held: only the wait).
    ['mine, held: the peers bring it', { i: mine, held: true, now: 9000 }, { at: null }],
    ['another\'s: waits for its owner', { i: theirs, now: 1100 }, { at: 1000 + pt + leaf }],
    ['another\'s, overdue', { i: theirs, now: 1000 + pt + leaf }, { why: 'overdue' }],
    ['another\'s, the owner is at work', { i: theirs, ownerActive: true, now: 5000 }, { at: null }],
    ['another\'s, the page waits on it', { i: theirs, ownerActive: true, waitSince: 2000, now: 2000 + pt + leaf }, { why: 'overdue' }],
    ['another\'s, held, the page waits', { i: theirs, held: true, waitSince: 2000, now: 2000 + pt + leaf }, { at: 2000 + 2 * (pt + leaf) }],
    ['another\'s, held, waited twice', { i: theirs, held: true, waitSince: 2000, now: 2000 + 2 * (pt + leaf) }, { why: 'overdue held' }],
    // The page's origin joined after the leaf was asked: the owner is in
    // the same position, the clock starts then.
    ['another\'s, the origin joined late', { i: theirs, originSince: 1500, now: 1500 + pt + leaf - 1 }, { at: 1500 + pt + leaf }],
    ['alone: at once', { stripe: alone, i: 0 }, { why: 'alone' }],
    ['alone, a holder: the cap window', { stripe: alone, i: 0, holder: true, now: 2000 }, { at: 3000 }],
    ['alone, a holder, the window passed', { stripe: alone, i: 0, holder: true, now: 3000 }, { why: 'cap' }],
    ['alone, held: the window from the HAVE', { stripe: alone, i: 0, held: true, heldAt: 2500, now: 3000 }, { at: 4500 }]
  ]
  for (const [name, s, want] of cases) assert.deepEqual(stripeOrigin({ ...base, ...s }), want, name)
})

test('reask: the Go side\'s table (fetch.TestReask)', () => {
  const t0 = 1000
  const every = 300
  const cases = [
    ['just asked', 0, 0, 100, false, { again: false, at: t0 + every }],
    ['asked an interval ago', 0, 0, every, false, { again: true, at: null }],
    ['someone holds it', 0, 0, 1000, true, { again: false, at: null }],
    ['the fetch re-asked lately', 0, 500, 400, false, { again: false, at: t0 + 500 }]
  ]
  for (const [name, asked, next, at, held, want] of cases) {
    assert.deepEqual(reask(t0 + asked, t0 + next, t0 + at, every, held), want, name)
  }
})

// leafOf finds the first leaf (under 200) of st for which pred holds.
function leafOf (st, pred) {
  for (let i = 0; i < 200; i++) if (pred(i)) return i
  throw new Error('no such leaf')
}

test('askOf: the owner first when another member owns the leaf', async () => {
  const [self, other] = await crowd(2)
  const st = new Stripe(root.bytes, self, [other])
  const theirs = leafOf(st, (i) => st.owner(i) === other)
  const mine = leafOf(st, (i) => st.owner(i) === self)
  assert.equal(askOf(st, theirs), other)
  assert.equal(askOf(st, mine), null)
  assert.equal(askOf(new Stripe(root.bytes, self, []), 0), null)
  // Not heard yet: every leaf is another's.
  const out = new Stripe(root.bytes, self, [other], false)
  assert.equal(askOf(out, mine), other)
})

test('clocks: the times of a striped fetch\'s round', () => {
  const c = { peerTimeout: 200, peerTimeMax: 8000, stallTimeout: 2000, dialTimeout: 5000 }
  const cases = [
    ['nothing measured', {}, { peerTime: 200, stallWin: 8000, ownerWait: 10_000, dialWait: 200, capWin: 2000 }],
    ['slow peers', { peerBlockMs: 3000, slowestMs: 1000 }, { peerTime: 3000, stallWin: 8000, ownerWait: 10_000, dialWait: 200, capWin: 3000 }],
    ['very slow peers', { peerBlockMs: 6000, slowestMs: 6000 }, { peerTime: 6000, stallWin: 12_000, ownerWait: 10_000, dialWait: 200, capWin: 18_000 }],
    ['peer time capped', { peerBlockMs: 20_000 }, { peerTime: 8000, stallWin: 16_000, ownerWait: 10_000, dialWait: 200, capWin: 2000 }],
    ['dials measured', { dialMs: 1500 }, { peerTime: 200, stallWin: 8000, ownerWait: 10_000, dialWait: 3000, capWin: 2000 }],
    ['dial wait capped', { dialMs: 9000 }, { peerTime: 200, stallWin: 8000, ownerWait: 10_000, dialWait: 10_000, capWin: 2000 }]
  ]
  for (const [name, m, want] of cases) assert.deepEqual(clocks(c, { peerBlockMs: null, dialMs: null, slowestMs: 0, ...m }), want, name)
})

test('waitedPace: a want given up on says a block takes at least that long', () => {
  const cases = [
    ['no block yet', null, 1500, 1500],
    ['a shorter wait says nothing', 3000, 1200, 3000],
    ['as long as the estimate', 3000, 3000, 3000],
    ['a longer wait moves it as a block would', 1000, 6000, 2000]
  ]
  for (const [name, prev, waited, want] of cases) assert.equal(waitedPace(prev, waited), want, name)
})

// The 10-tab crowd's video: the first blocks came from peers in 1 s, then
// owners queued this page's wants behind eight other tabs' (want-block to
// block 5 s at the median). Counting only the blocks that came, the peer
// time stayed 1 s and every other member's leaf went to the origin 1 s
// plus an origin leaf after it was asked; counting the wants given up
// on, the owners are given longer.
test('waitedPace: wants given up on lengthen what the next leaf is given', () => {
  const c = { peerTimeout: 200, peerTimeMax: 8000, stallTimeout: 2000, dialTimeout: 5000 }
  const leaf = 500
  const dueAfter = (peerBlockMs) => {
    const { peerTime } = clocks(c, { peerBlockMs, dialMs: null, slowestMs: 0 })
    // when a leaf asked at 0 of a silent owner is overdue (rank 1, first wave)
    return overdue({ since: 0, waitSince: null, rank: 1, held: false, ownerActive: false, backup: 1 }, 0, peerTime, leaf).at
  }
  let est = 1000
  assert.equal(dueAfter(est), 1500)
  const dues = []
  for (let k = 0; k < 6; k++) {
    est = waitedPace(est, 5000) // six wants given up on after 5 s each
    dues.push(dueAfter(est))
  }
  for (let k = 1; k < dues.length; k++) assert.ok(dues[k] > dues[k - 1], `each give-up lengthens the next wait: ${dues}`)
  assert.ok(dues[5] > 4000, `after six, the next leaf is given more than 4 s: ${dues}`)
  // Blocks that come quickly again bring it down (client.js's EWMA).
  for (let k = 0; k < 20; k++) est = 0.8 * est + 0.2 * 1000
  assert.ok(dueAfter(est) < 1600)
})

test('stall: the origin takes over from silent peers', () => {
  const cases = [
    ['quiet, not long', { now: 5000, since: 1000, stallWin: 8000, canOrigin: true }, { stalled: false, at: 9000 }],
    ['quiet too long', { now: 9000, since: 1000, stallWin: 8000, canOrigin: true }, { stalled: true, at: null }],
    ['no origin to turn to', { now: 9000, since: 1000, stallWin: 8000, canOrigin: false }, { stalled: false, at: 9000 }]
  ]
  for (const [name, s, want] of cases) assert.deepEqual(stall(s), want, name)
})

// A stalled fetch with room for 2 origin leaves, its window leaves 4-19
// asked of their owners at 1000, 1100, ... (the front first), the owners
// busy (active) so that only the stall rule lets the origin in: it gets
// the two of another member asked last, the furthest back in the owners'
// queues, not the two whose blocks are likeliest on their way.
test('stallOrder: a stalled fetch gives the origin the window\'s last leaves first', async () => {
  assert.deepEqual(stallOrder(4, 8), [7, 6, 5, 4])
  assert.deepEqual(stallOrder(3, 3), [])
  const [self, other] = await crowd(2)
  const st = new Stripe(root.bytes, self, [other])
  const askedAt = (i) => 1000 + 100 * (i - 4)
  const o = (i) => originLeaf({
    stripe: st, i, now: 20_000, asked: askedAt(i), capFrom: null, ownerAt: 500, heardAt: 800, holder: false, holderUp: false,
    held: false, heldAt: null, ownerActive: true, waitSince: null, rank: 1, stalled: true, leaf: 300, capMax: 15_000,
    lastBlocks: [], peerTime: 200, ownerWait: 10_000, dialWait: 1000, capWin: 2000
  })
  const theirs = []
  for (let i = 4; i < 20; i++) if (st.owner(i) === other) theirs.push(i)
  assert.ok(theirs.length >= 4, `leaves of the other member: ${theirs}`)
  const taken = []
  for (const i of stallOrder(4, 20)) {
    if (taken.length === 2) break
    if (o(i).why === 'stall') taken.push(i)
  }
  assert.deepEqual(taken, theirs.slice(-2).reverse())
})

test('ownLeft and waitOn: the leaf the page waits on', async () => {
  const [self, other] = await crowd(2)
  const st = new Stripe(root.bytes, self, [other])
  const mine = leafOf(st, (i) => st.owner(i) === self)
  const theirs = leafOf(st, (i) => st.owner(i) === other)
  assert.ok(ownLeft(st, 0, 200, () => true))
  assert.ok(!ownLeft(st, 0, 200, (i) => i !== mine && st.owner(i) !== self))
  assert.ok(ownLeft(st, mine, mine + 1, () => true))
  assert.ok(!ownLeft(st, theirs, theirs + 1, () => true))
  assert.ok(!ownLeft(new Stripe(root.bytes, self, []), 0, 200, () => true), 'alone')
  const w0 = { leaf: null, at: null }
  const cases = [
    ['own leaves left: no wait', w0, { own: true, alone: false, lowest: 3, now: 100 }, { leaf: null, at: null }],
    ['alone: no wait', { leaf: 2, at: 50 }, { own: false, alone: true, lowest: 3, now: 100 }, { leaf: null, at: 50 }],
    ['nothing of its own: waits from now', w0, { own: false, alone: false, lowest: 3, now: 100 }, { leaf: 3, at: 100 }],
    ['still the same leaf: the clock goes on', { leaf: 3, at: 100 }, { own: false, alone: false, lowest: 3, now: 900 }, { leaf: 3, at: 100 }],
    ['the next leaf: a new clock', { leaf: 3, at: 100 }, { own: false, alone: false, lowest: 4, now: 900 }, { leaf: 4, at: 900 }]
  ]
  for (const [name, w, a, want] of cases) assert.deepEqual(waitOn(w, a), want, name)
})

test('originRank: a leaf\'s place in its owner\'s origin queue', async () => {
  const [self, other] = await crowd(2)
  const st = new Stripe(root.bytes, self, [other])
  const theirs = []
  for (let i = 0; theirs.length < 5; i++) if (st.owner(i) === other) theirs.push(i)
  // Two at once: the owner's first two leaves are rank 1, the next two 2.
  assert.deepEqual(theirs.map((i) => originRank(st, theirs[0], i, 2)), [1, 1, 2, 2, 3])
  assert.deepEqual(theirs.map((i) => originRank(st, theirs[2], i, 2)).slice(2), [1, 1, 2])
  assert.equal(originRank(st, theirs[0], theirs[4], 1), 5)
})

test('reaskLeaf: when a want is asked afresh', async () => {
  const [self, other, holder] = await crowd(3)
  const st = new Stripe(root.bytes, self, [other])
  const theirs = leafOf(st, (i) => st.owner(i) === other)
  const mine = leafOf(st, (i) => st.owner(i) === self)
  const tabs = new Set()
  const up = new Set([other, holder])
  const base = {
    stripe: st,
    i: theirs,
    asking: true,
    asked: new Set([other]),
    candidates: [other, holder],
    dontHave: new Set(),
    holders: new Set([holder]),
    held: false,
    coming: false,
    connected: (p) => up.has(p),
    isTab: (p) => tabs.has(p),
    peerAt: 1000,
    reaskAt: 0,
    now: 1100,
    interval: 300
  }
  const none = { again: null, at: null }
  const cases = [
    ['asked of its owner, no answer', {}, none],
    ['not asking', { asking: false, asked: new Set() }, none],
    ['asked of nobody, a candidate up', { asked: new Set() }, { again: 'unasked', at: null }],
    ['asked of nobody, nobody up', { asked: new Set(), connected: () => false }, none],
    ['a Go owner not asked', { asked: new Set([holder]) }, { again: 'unasked', at: null }],
    ['a Go owner not asked, another\'s copy coming', { asked: new Set([holder]), coming: true }, none],
    ['a Go owner not connected', { asked: new Set([holder]), connected: (p) => p === holder }, none],
    ['a tab owner not asked: the DONT_HAVEs reach it', { asked: new Set([holder]), isTab: (p) => p === other }, none],
    ['my own leaf, asked of a holder', { i: mine, asked: new Set([holder]) }, none],
    ['a Go owner said DONT_HAVE: not yet', { dontHave: new Set([other]) }, { again: null, at: 1300 }],
    ['a Go owner said DONT_HAVE: again', { dontHave: new Set([other]), now: 1300 }, { again: 'stale', at: null }],
    ['a Go holder said DONT_HAVE', { dontHave: new Set([holder]), now: 1300 }, { again: 'stale', at: null }],
    ['the fetch re-asked lately', { dontHave: new Set([other]), now: 1300, reaskAt: 1500 }, { again: null, at: 1500 }],
    ['a tab owner said DONT_HAVE: it keeps the want', { dontHave: new Set([other]), now: 1300, isTab: (p) => p === other }, none],
    ['DONT_HAVE, but another peer holds it', { dontHave: new Set([other]), now: 1300, held: true }, none],
    ['DONT_HAVE from neither owner nor holder', { dontHave: new Set([self]), now: 1300 }, none]
  ]
  for (const [name, r, want] of cases) assert.deepEqual(reaskLeaf({ ...base, ...r }), want, name)
})

test('originLeaf: when the origin takes a leaf of a striped fetch', async () => {
  const [self, other] = await crowd(2)
  const st = new Stripe(root.bytes, self, [other])
  const theirs = leafOf(st, (i) => st.owner(i) === other && st.place(i) === 1)
  const mine = leafOf(st, (i) => st.owner(i) === self)
  const alone = new Stripe(root.bytes, self, [])
  const pt = 200
  const leaf = 300
  const base = {
    stripe: st,
    i: theirs,
    now: 1000,
    asked: 1000,
    capFrom: null,
    ownerAt: 500,
    heardAt: 800,
    holder: false,
    holderUp: false,
    held: false,
    heldAt: null,
    ownerActive: false,
    waitSince: null,
    rank: 1,
    stalled: false,
    leaf,
    capMax: 15_000,
    lastBlocks: [],
    peerTime: pt,
    ownerWait: 10_000,
    dialWait: 1000,
    capWin: 2000
  }
  const cases = [
    ['another\'s, its owner not connected: wait for it', { ownerAt: undefined, now: 5000 }, { at: 11_000 }],
    ['another\'s, its owner never came: overdue', { ownerAt: undefined, now: 11_000 }, { why: 'overdue' }],
    ['another\'s, not connected, but stalled: still waits', { ownerAt: undefined, now: 5000, stalled: true }, { at: 11_000 }],
    ['another\'s: waits for its owner', {}, { at: 1000 + pt + leaf }],
    ['another\'s, the owner connected late: its clock starts then', { ownerAt: 3000, now: 3000 }, { at: 3000 + pt + leaf }],
    ['another\'s, overdue', { now: 1000 + pt + leaf }, { why: 'overdue' }],
    ['another\'s, stalled', { ownerActive: true, now: 5000, stalled: true }, { why: 'stall' }],
    ['a holder still being dialled', { i: mine, holder: true, now: 1500 }, { at: 2000 }],
    ['mine, at once', { i: mine }, { why: 'mine' }],
    ['mine, a holder up: peers first', { i: mine, holder: true, holderUp: true, now: 1100 }, { at: 1000 + pt }],
    ['alone, a holder up: the cap window', { stripe: alone, i: 0, holder: true, holderUp: true, now: 2000 }, { at: 3000 }],
    ['alone, the cap window passed', { stripe: alone, i: 0, holder: true, holderUp: true, now: 3000 }, { why: 'cap' }],
    ['alone, the window passed, the peer delivering', { stripe: alone, i: 0, holder: true, holderUp: true, now: 3000, lastBlocks: [2500] }, { at: 5000, capFrom: 3000 }],
    ['alone, the restarted window', { stripe: alone, i: 0, holder: true, holderUp: true, capFrom: 3000, now: 4000, lastBlocks: [3900] }, { at: 5000 }],
    ['alone, delivering but past capMax', { stripe: alone, i: 0, holder: true, holderUp: true, now: 16_000, lastBlocks: [15_900] }, { why: 'cap' }]
  ]
  for (const [name, o, want] of cases) assert.deepEqual(originLeaf({ ...base, ...o }), want, name)
})

test('crowdOf: every page of a crowd of 40 computes the same owners', async () => {
  const ps = await crowd(40)
  // Each page hears of the others in its own order (here: rotated), and
  // of itself too (its own FETCH comes back through the table's peers).
  const views = ps.map((self, k) => new Stripe(root.bytes, self, crowdOf([...ps.slice(k), ...ps.slice(0, k)], self)))
  for (const v of views) assert.equal(v.members.length, 40)
  for (let i = 0; i < 200; i++) {
    const o = views[0].owner(i)
    for (const v of views) assert.equal(v.owner(i), o, `leaf ${i}`)
  }
  const many = await crowd(MAX_MEMBERS + 6)
  const c = crowdOf(many, many[3])
  assert.equal(c.length, MAX_MEMBERS)
  assert.ok(!c.includes(many[3]))
  assert.deepEqual(crowdOf(many, many[3], 2), [many[0], many[1]])
})

test('cancelOnOrigin: the want at peers ends when the origin is asked, unless one is sending', () => {
  const cases = [
    { name: 'asked of peers, none said HAVE: cancel now', s: { asking: true, coming: false }, want: true },
    { name: 'a peer said HAVE: its send is under way', s: { asking: true, coming: true }, want: false },
    { name: 'not asked of peers', s: { asking: false, coming: false }, want: false }
  ]
  for (const c of cases) assert.equal(cancelOnOrigin(c.s), c.want, c.name)
})
