// Striping: tabs (and Go nodes) fetching the same root at the same time
// split the leaves they take from the origin, by the Go fetch package's
// rule (fetch/policy.go, "Striping"; docs/fetch.md "Striping, and how a browser
// joins a stripe"). Pure functions of the members, the leaf and the
// clock, so that they are tested without a browser or timers
// (test/stripe.test.mjs); client.js's striped fetch carries them out.
import { sha256 } from '@noble/hashes/sha2.js'
import { base58btc } from 'multiformats/bases/base58'
import { capHedges, capWindow } from './gate.js'

// ASSUMED_LEAF_MS is how long an origin leaf is taken to need before this
// page has measured one: 1 MiB/s, the Go side's assumedLeafTime.
export const ASSUMED_LEAF_MS = 1000

// peerBytes is the binary form of a peer ID string (the multihash a /p2p/
// address component carries): what Go's peer.ID holds.
export function peerBytes (id) {
  return base58btc.baseDecode(id)
}

// stripeScore is member p's score for leaf i of root: the first 8 bytes,
// read big-endian, of SHA-256(root CID bytes || peer ID bytes || i as 8
// bytes big-endian), as a BigInt. root and p are Uint8Arrays.
export function stripeScore (root, p, i) {
  const buf = new Uint8Array(root.length + p.length + 8)
  buf.set(root, 0)
  buf.set(p, root.length)
  new DataView(buf.buffer).setBigUint64(root.length + p.length, BigInt(i))
  const sum = sha256(buf)
  return new DataView(sum.buffer, sum.byteOffset, 8).getBigUint64(0)
}

// compareBytes orders byte strings as Go orders peer.IDs (strings).
export function compareBytes (a, b) {
  const n = Math.min(a.length, b.length)
  for (let k = 0; k < n; k++) if (a[k] !== b[k]) return a[k] - b[k]
  return a.length - b.length
}

// Stripe is the owners of a root's leaves among a set of members (peer ID
// strings): the crowd, and self if selfIn (see heard: a page the others
// cannot have heard of yet owns nothing). It caches owners and places as
// they are asked; a new set of members needs a new Stripe. score is
// stripeScore but in tests.
export class Stripe {
  constructor (root, self, crowd, selfIn = true, score = stripeScore) {
    this.root = root // Uint8Array, the root CID's bytes
    this.self = self
    this.score = score
    const ids = new Set(crowd)
    if (selfIn) ids.add(self)
    else ids.delete(self)
    this.bytes = new Map([...ids].map((p) => [p, peerBytes(p)]))
    this.members = [...ids].sort((a, b) => compareBytes(this.bytes.get(a), this.bytes.get(b)))
    this.owners = new Map()
    this.places = new Map()
  }

  // key names the members: two stripes of a root with equal keys are the same.
  get key () { return this.members.join(' ') }

  // alone reports whether nothing is split: no member but this page.
  alone () { return this.members.length === 0 || (this.members.length === 1 && this.members[0] === this.self) }

  has (p) { return this.bytes.has(p) }

  // ranked is the members of leaf i, highest score first (ties: the
  // greater peer ID bytes first).
  ranked (i) {
    const sc = new Map(this.members.map((p) => [p, this.score(this.root, this.bytes.get(p), i)]))
    return [...this.members].sort((a, b) => {
      const x = sc.get(a)
      const y = sc.get(b)
      if (x !== y) return x > y ? -1 : 1
      return compareBytes(this.bytes.get(b), this.bytes.get(a))
    })
  }

  // owner is the member that takes leaf i from the origin (null: none).
  owner (i) {
    if (!this.owners.has(i)) {
      const r = this.ranked(i)
      this.owners.set(i, r[0] ?? null)
      if (this.bytes.has(this.self)) this.places.set(i, r.indexOf(this.self))
    }
    return this.owners.get(i)
  }

  // place is this page's place in leaf i's ranking: 0 if it owns the leaf,
  // 1 if it has the next-highest score, and so on (the number of members
  // if it is not one).
  place (i) {
    if (!this.bytes.has(this.self)) return this.members.length
    this.owner(i)
    return this.places.get(i)
  }
}

// MAX_MEMBERS caps the peers a page counts in a root's stripe besides
// itself: the Go side's cap (announce.DefaultMaxFetchers, 64, what
// Table.Fetchers returns to the fetch package). Every member must compute
// the same owners, so the page counts as many as a Go node does; with a
// lower cap (16 until now) a crowd of more than 17 fetching one root split
// its leaves two ways, and a leaf could have two owners or none. Past 64
// the two still differ in which they keep: Go keeps those with the most
// evidence, then the latest expiry; the page keeps those it heard of
// first.
export const MAX_MEMBERS = 64

// crowdOf is the crowd of a stripe: the peers announcing a fetch of the
// root (fetchers, in the order the page heard of them), less self, at most
// max (MAX_MEMBERS).
export function crowdOf (fetchers, self, max = MAX_MEMBERS) {
  return fetchers.filter((p) => p !== self).slice(0, max)
}

// heard reports whether the others fetching the root can be taken to have
// heard of this page's fetch, announced at announced (ms; null: not
// announced), by now: hearing (the peer timeout) after it. It returns
// { heard } and, while not yet, at: when it will be.
export function heard (announced, now, hearing) {
  if (announced == null) return { heard: false, at: null }
  const due = announced + hearing
  return now >= due ? { heard: true, at: null } : { heard: false, at: due }
}

// overdue says whether a leaf another member owns is taken from the origin
// after all (the Go side's overdue, times in ms): its owner should have had
// it from the origin (rank times the origin's time for a leaf, leaf) and
// offered it within peerTimeout. That is when nobody has said HAVE of it by
// then and its owner has been silent for as long, or when the page has
// waited peerTimeout plus one leaf's origin time on it (its owner is too
// busy), twice that if a peer has said HAVE of it. The members after the
// owner go in waves: the one placed next (backup 1) at those times, the one
// after it peerTimeout plus one origin leaf (and the wait) later, and so
// on, one member a wave, as the Go side's overdue (no cap: with the fourth
// and later members going together, every member of a large stripe took a
// late leaf from the origin).
//
// a is { since (when the owner can be taken to have started on the leaf:
// when it was asked of peers or when this page's origin joined, whichever
// is later), waitSince (when the page began to wait on it, or null), rank
// (1 + the owner's leaves before it / origin concurrency), held (a peer
// said HAVE of it), ownerActive (its owner sent a block or a HAVE within
// peerTimeout plus one origin leaf), backup (stripe.place; 0 counts as 1) }.
// It returns { due: true }, or { due: false, at } with at the time the
// answer may change (null: not by the clock).
export function overdue (a, now, peerTimeout, leaf) {
  const wave = Math.max(a.backup, 1)
  let at = null
  const soon = (t) => { at = at == null ? t : Math.min(at, t) }
  if (!a.held && !a.ownerActive) {
    // Each wave after the first waits for the one before it to fetch the
    // leaf from the origin (leaf) and offer it (peerTimeout).
    const due = a.since + peerTimeout + Math.max(a.rank, 1) * leaf + (wave - 1) * (peerTimeout + leaf)
    if (now >= due) return { due: true }
    soon(due)
  }
  if (a.waitSince != null) {
    let wait = wave * (peerTimeout + leaf)
    if (a.held) wait *= 2 // a peer has it: it is on its way
    const due = a.waitSince + wait
    if (now >= due) return { due: true }
    soon(due)
  }
  return { due: false, at }
}

// stripeOrigin says whether a leaf of a striped fetch (the page announced
// it) is asked of the origin now, and why, or else when to look again.
// Every leaf is asked of peers too (a member or holder that has it sends
// it, and the first copy wins):
//
//   - the stripe has other members, the page owns the leaf and no peer has
//     said HAVE of it ('mine'): at once, or, when a holder (a connected
//     provider that is not fetching the root) could send it, once
//     peerTimeout has passed since it was asked of peers (the Go side's
//     first-block rule);
//   - another member's leaf, or the page's own that a peer said HAVE of:
//     when overdue says so ('overdue', 'overdue held');
//   - no other member (alone): at once when no holder is connected and no
//     peer said HAVE of it ('alone'; the caller waits a while for holders
//     still being dialled), else once capWin has passed since it was
//     asked, or since the HAVE if one came ('cap').
//
// s is { stripe, i, now, asked (when leaf i was asked of peers), held,
// heldAt (when the HAVE came, or null), holder (a holder is connected),
// ownerActive, waitSince,
// rank, peerTimeout, leaf (ms an origin leaf takes), originSince (when
// this page's origin joined: its heard time), capWin }. It returns { why }
// or { at } (null: not by the clock).
export function stripeOrigin (s) {
  if (s.stripe.alone()) {
    if (!s.holder && !s.held) return { why: 'alone' }
    const due = Math.max(s.asked, s.heldAt ?? -Infinity) + s.capWin
    return s.now >= due ? { why: 'cap' } : { at: due }
  }
  if (s.stripe.owner(s.i) === s.stripe.self && !s.held) {
    if (!s.holder) return { why: 'mine' }
    const due = s.asked + s.peerTimeout
    return s.now >= due ? { why: 'mine' } : { at: due }
  }
  const d = overdue({
    since: Math.max(s.asked, s.originSince),
    waitSince: s.waitSince,
    rank: s.rank,
    held: s.held,
    ownerActive: s.ownerActive,
    backup: s.stripe.place(s.i)
  }, s.now, s.peerTimeout, s.leaf)
  if (d.due) return { why: s.held ? 'overdue held' : 'overdue' }
  return { at: d.at }
}

// cancelOnOrigin says whether a striped fetch that asks the origin for a
// leaf it has asked of peers ends the want at those peers then, not when
// the origin's copy comes: yes, unless a peer asked has said HAVE of it
// (its send is under way, which no CANCEL stops). The origin is asked
// once the peers are not waited for (overdue, cap, stall, or this page's
// own leaf); an owner whose turn to send came while the origin's copy was
// on its way sent the whole block in vain over WebRTC, because the CANCEL
// (sent when the origin's copy came, and queued behind the blocks this
// page sends that peer) reached it after its turn began: in the 10-tab S0
// crowd 11 of 18 MiB that arrived unwanted came so ('origin, cancel
// late'). If the origin then fails, the leaf is asked of peers again.
export function cancelOnOrigin ({ asking, coming }) {
  return asking && !coming
}

// reask says whether a leaf another member owns, asked of it at asked and
// answered DONT_HAVE, with no HAVE from anyone since, is asked again now
// (the Go side's reask, times in ms): at most every interval per fetch
// (not before next, the time the last re-ask allows the next one) and not
// before interval after it was last asked. Go's bitswap server does not
// reliably send a block to a peer it answered DONT_HAVE once it has it;
// a page's does. It returns { again } and, while not yet, at.
export function reask (asked, next, now, interval, held) {
  if (held) return { again: false, at: null }
  const due = Math.max(asked + interval, next)
  return now >= due ? { again: true, at: null } : { again: false, at: due }
}

// askOf is the peer leaf i is asked of first: its owner when another
// member owns it (its bitswap sends the block when it has it), else null
// (the page's own leaf, or nothing is split: any provider).
export function askOf (stripe, i) {
  if (stripe.alone()) return null
  const o = stripe.owner(i)
  return o === stripe.self ? null : o
}

// clocks are the times a striped fetch goes by in a round (ms), from the
// page's config c ({ peerTimeout, peerTimeMax, stallTimeout, dialTimeout })
// and what it has measured, m ({ peerBlockMs: what a block has taken from
// its peers, want-block to block; dialMs: what a dial through the relay
// has taken; slowestMs: what a block takes from its slowest provider },
// each null or 0 if not measured):
//
//   - peerTime, what a peer is given to offer a leaf (overdue's
//     peerTimeout): peerTimeout, or peerBlockMs if longer (over WebRTC
//     between tabs on a busy machine 0.3-2 s, and seconds more queued
//     behind the blocks a tab serves others), up to peerTimeMax;
//   - stallWin, how long peers may deliver nothing before the origin takes
//     the first missing leaves (see stall): 4 stallTimeouts, or twice
//     peerTime, up to 8 stallTimeouts (with 2 s the origin took most of
//     the 10-tab crowd's video);
//   - ownerWait, how long a leaf whose owner is not connected yet waits
//     for the connection: two dial timeouts (WebRTC through the relay
//     takes seconds on a busy machine; the owner repeats its FETCH every
//     second: it is there);
//   - dialWait, how long a leaf the holders could send waits while none
//     of them is connected: twice dialMs, peerTimeout if longer, up to
//     ownerWait (a holder that has gone, a closed tab, delays the origin
//     that long at most);
//   - capWin, gate.js's capWindow over slowestMs.
export function clocks (c, m) {
  const peerTime = Math.min(Math.max(c.peerTimeout, m.peerBlockMs ?? 0), c.peerTimeMax)
  return {
    peerTime,
    stallWin: Math.min(Math.max(4 * c.stallTimeout, 2 * peerTime), 8 * c.stallTimeout),
    ownerWait: 2 * c.dialTimeout,
    dialWait: Math.min(2 * c.dialTimeout, Math.max(c.peerTimeout, 2 * (m.dialMs ?? 0))),
    capWin: capWindow(c.stallTimeout, m.slowestMs ?? 0)
  }
}

// waitedPace is the page's peer time estimate (peerBlockMs, an EWMA of
// want-block to block over the blocks that came) once a want that stood
// waited ms at a connected peer is given up for the origin (overdue,
// stall, cap): the block would have taken at least that long, so the
// estimate moves toward it as such a block would have moved it; a wait
// shorter than the estimate says nothing. Without it the estimate counted
// only the blocks that came, the quick ones: in the 10-tab crowd a tab
// whose first blocks took 1 s kept a peer time near 1 s while its wants
// stood 5-12 s at busy owners, and gave its video's leaves to the origin
// after 2-3 s each (overdue: peerTime plus an origin leaf). prev null:
// no block has come yet.
export function waitedPace (prev, waited) {
  if (prev == null) return waited
  if (waited <= prev) return prev
  return 0.8 * prev + 0.2 * waited
}

// stall says whether the peers of a striped fetch have stalled: no peer
// block for stallWin since since (the later of the last peer block and
// when the page was heard, or the fetch's start), with an origin to turn
// to. The origin then takes the first missing leaves, whoever owns them,
// until a peer block comes again: a member or holder that announces and
// sends nothing cannot hold a fetch up longer (a crowd run hung 30 s on
// such a holder). It returns { stalled } and, while not, at: when it
// would be.
export function stall ({ now, since, stallWin, canOrigin }) {
  const stalled = canOrigin && now - since >= stallWin
  return { stalled, at: stalled ? null : since + stallWin }
}

// stallOrder is the order in which a stalled striped fetch offers the
// leaves of its window, lowest to end (exclusive), still missing, to the
// origin under the stall rule: the last first. The first were asked
// earliest, so their owners' turns to send them have come or are next;
// taken from the origin, the CANCEL came too late and the block was sent
// in vain: in a loaded 10-tab crowd 24 MiB a run arrived unwanted so
// ('origin stall, cancel late'), a tenth of what tabs sent. The last
// stand furthest back in the owners' queues, and a CANCEL reaches them
// before their turn. Every leaf is fetched either way; a peer block that
// comes ends the stall.
export function stallOrder (lowest, end) {
  const out = []
  for (let i = end - 1; i >= lowest; i--) out.push(i)
  return out
}

// ownLeft reports whether the page owns a leaf from from to to (exclusive)
// that is still to fetch and that no peer holds (pending(i)).
export function ownLeft (stripe, from, to, pending) {
  if (stripe.alone()) return false
  for (let i = from; i < to; i++) if (stripe.owner(i) === stripe.self && pending(i)) return true
  return false
}

// waitOn is the leaf a striped fetch waits on, and since when (the Go
// reader's waitSince; overdue's waitSince): the first missing one
// (lowest), once the page has nothing of its own left to fetch (own) in a
// stripe it shares; none while it has (at is then kept). w is the last
// answer, { leaf, at }.
export function waitOn (w, { own, alone, lowest, now }) {
  if (own || alone) return { leaf: null, at: w.at }
  if (w.leaf !== lowest) return { leaf: lowest, at: now }
  return w
}

// originRank is leaf i's place in its owner's origin queue (overdue's
// rank): 1 + the owner's leaves from lowest before it, over the origin
// concurrency (an owner takes its leaves in file order, concurrency at
// once).
export function originRank (stripe, lowest, i, concurrency) {
  const owner = stripe.owner(i)
  let before = 0
  for (let k = lowest; k < i; k++) if (stripe.owner(k) === owner) before++
  return 1 + Math.floor(before / concurrency)
}

// reaskLeaf says whether the want of leaf i, asked of peers (r.asking), is
// restarted now (asked afresh: cancelled, then a new want) and why:
//
//   - 'unasked': it went to nobody while a candidate is connected now (it
//     was asked before anyone could be), or its owner is a connected peer
//     that is not a tab (a Go node) and was not asked, unless another
//     peer said HAVE of it (coming: its block is on the way, and the want
//     ended at the others, the owner too). A tab owner new to
//     the leaf is reached by the DONT_HAVEs: restarting every want whose
//     owner changed as tabs came and went sent twice the WebRTC bytes the
//     10-tab crowd used.
//   - 'stale': its owner, or a holder, answered DONT_HAVE, that peer is
//     not a tab, nobody holds the leaf, and reask (above) says it is time:
//     a Go peer does not reliably send a block unasked once it has it. A
//     tab keeps the want and sends it; asking it again put the leaf at
//     the back of its serving queue, and the 10-tab crowd took more
//     leaves from the origin as overdue.
//
// r is { stripe, i, asking, asked (the peers the want went to, a Set),
// candidates (the peers it may go to), dontHave (those that answered
// DONT_HAVE, a Set), holders (a Set), held (a peer holds it: held(i)),
// coming (a peer asked said HAVE of it),
// connected(p), isTab(p), peerAt (when it was last asked), reaskAt (when
// the fetch may re-ask next), now, interval }. It returns { again } (null:
// not now) and at, when the answer may change by the clock.
export function reaskLeaf (r) {
  if (!r.asking) return { again: null, at: null }
  const o = askOf(r.stripe, r.i)
  if ((r.asked.size === 0 && r.candidates.some(r.connected)) ||
    (o != null && !r.coming && !r.isTab(o) && r.connected(o) && !r.asked.has(o))) return { again: 'unasked', at: null }
  const owner = r.stripe.owner(r.i)
  const stale = [...r.dontHave].some((p) => ((p === owner && p !== r.stripe.self) || r.holders.has(p)) && !r.isTab(p))
  if (!stale || r.held) return { again: null, at: null }
  const d = reask(r.peerAt, r.reaskAt, r.now, r.interval, false)
  return { again: d.again ? 'stale' : null, at: d.at }
}

// originLeaf says whether leaf i of a striped fetch, asked of peers and
// not of the origin, with room at the origin, is asked of the origin now
// and why, or else when to look again:
//
//   - a leaf of an owner not connected yet waits for the connection, up
//     to ownerWait after it was asked (waiting only as long as for a
//     holder made the 10-tab crowd take three times as many leaves as
//     overdue); the owner's clock starts when it is connected (ownerAt);
//   - a leaf the holders could send, while none of them is connected yet
//     (holder, not holderUp), waits up to dialWait;
//   - then stripeOrigin decides, the owner's clock starting at the later
//     of heardAt (when the others heard of the page; now if not yet) and
//     ownerAt; a 'cap' hedge waits again (capFrom: now) while a peer asked
//     keeps delivering (gate.js capHedges: it is busy, not gone);
//   - a stalled fetch (stall) takes the leaf anyway ('stall').
//
// o is { stripe, i, now, asked (when it was first asked of peers),
// capFrom (when its cap window last restarted, or null), ownerAt, heardAt,
// holder, holderUp, held, heldAt, ownerActive, waitSince, rank, stalled,
// leaf, capMax, lastBlocks (the times of the last blocks from the peers it
// was asked of, and of its HAVE) } and the clocks (peerTime, ownerWait,
// dialWait, capWin). It returns { why }, or { at } (null: not by the
// clock), with capFrom when the cap window restarts.
export function originLeaf (o) {
  const { stripe, i, now } = o
  if (stripe.owner(i) !== stripe.self && !stripe.alone() && o.ownerAt == null && now - o.asked < o.ownerWait) return { at: o.asked + o.ownerWait }
  if (o.holder && !o.holderUp && now - o.asked < o.dialWait) return { at: o.asked + o.dialWait }
  const d = stripeOrigin({
    stripe,
    i,
    now,
    asked: o.capFrom ?? o.asked,
    held: o.held,
    heldAt: o.heldAt,
    holder: o.holderUp,
    ownerActive: o.ownerActive,
    waitSince: o.waitSince,
    rank: o.rank,
    peerTimeout: o.peerTime,
    leaf: o.leaf,
    originSince: Math.max(o.heardAt ?? now, o.ownerAt ?? -Infinity),
    capWin: o.capWin
  })
  if (d.why === 'cap' && !capHedges({ now, asked: o.asked, win: o.capWin, capMax: o.capMax, lastBlocks: o.lastBlocks })) {
    return { at: now + o.capWin, capFrom: now }
  }
  if (d.why != null) return { why: d.why }
  if (o.stalled) return { why: 'stall' }
  return { at: d.at ?? null }
}
