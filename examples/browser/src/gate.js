// The page's hedge rules as pure functions of the time and what a fetch
// has seen, so that they are tested without a browser or timers
// (test/gate.test.mjs). client.js's originGate and leaf carry them out.
// They follow the Go fetch package's rules (fetch/policy.go).

// originJoin says whether the origin may take a leaf of a fetch that peers
// take part in now, and why, or else when to look again:
//
//   - before the first peer block ('first'): once peerTimeout has passed
//     since the fetch began, or what an origin leaf takes this page if
//     that is longer, or one and a half blocks at a provider's known pace
//     (a provider that delivered to this page before), if that is longer
//     and at that pace the provider keeps up with the origin (concurrency
//     blocks per pace, at least half an origin leaf's rate); with no
//     provider of the fetch's pace known but one connected, the page's
//     typical pace (what a block has taken from its peers in general)
//     stands for it: in a crowd of tabs every fetch began with none known,
//     a block between tabs took longer than an origin leaf to come, and
//     the origin took every small file and most of the others, while
//     those peers, once measured, kept up; and once a peer asked has said
//     HAVE (a page serving a block says so as it starts to send it: it is
//     on its way), one origin leaf's time more (the Go side's "held": the
//     origin, asked then, would bring it no sooner);
//   - after it ('stall'): nothing delivered for peerTimeout, or for one
//     and a half rounds of concurrency blocks at the fetch's own gap
//     between blocks, or one and a half blocks at the known pace,
//     whichever is longest;
//   - after it ('slow'): once the origin's time for a leaf is known, the
//     peers' rate in this fetch (over more than peerTimeout) is under half
//     the origin's; the rates change, so look again within 100 ms.
//
// A holder of the root that is not fetching it and has sent this page a
// block or HAVE within stallTimeout (servingAt: the seed, in a crowd) is
// up, only busy serving (the Go side's holderDelivering): then the first
// block gets one origin leaf's time more, as when held; the stall window
// runs from that holder's last block or HAVE, whichever fetch it was for,
// and is one origin leaf longer; and 'slow' needs the rate of at least
// slowBlocks peer blocks (Go's peerRateWindow), not a block or two that
// came in a burst. Before, a tab that opened while the seed served the
// 20 MiB video to other tabs let the origin in after 200 ms without a
// block and lost 10-18 leaves of the crowd's site to it.
//
// s is { now, t0, peerDelivered, held, firstPeerAt, lastPeer, peerBlocks,
// peerBytes, pace (ms per block of the fastest connected provider, or
// null), typicalPace (ms per block of this page's peers, or null: pass it
// only when a provider of the fetch is connected), originLeafMs (or
// null), peerTimeout, concurrency, leafBytes, servingAt (or null),
// stallTimeout }.
// It returns { why } when the origin joins, else { at } (ms, the clock of
// now).
export function originJoin (s) {
  const keepsUp = (pace) => pace != null && (s.originLeafMs == null || pace <= 2 * s.concurrency * s.originLeafMs) ? 1.5 * pace : 0
  const paced = keepsUp(s.pace)
  const serving = s.servingAt != null && s.now - s.servingAt < s.stallTimeout
  const leaf = s.originLeafMs ?? s.peerTimeout
  if (!s.peerDelivered) {
    const at = s.t0 + Math.max(s.peerTimeout, s.originLeafMs ?? 0, s.pace != null ? paced : keepsUp(s.typicalPace)) + (s.held || serving ? leaf : 0)
    return s.now >= at ? { why: 'first' } : { at }
  }
  const gap = s.peerBlocks > 1 ? (s.lastPeer - s.firstPeerAt) / (s.peerBlocks - 1) : 0
  const since = serving ? Math.max(s.lastPeer, s.servingAt) : s.lastPeer
  let at = since + Math.max(s.peerTimeout, 1.5 * s.concurrency * gap, paced) + (serving ? leaf : 0)
  // The holder may stop serving meanwhile: look again when it counts as
  // gone, the stall window then being the plain one.
  if (serving) at = Math.min(at, Math.max(s.servingAt + s.stallTimeout, s.lastPeer + Math.max(s.peerTimeout, 1.5 * s.concurrency * gap, paced)))
  if (s.now >= at) return { why: 'stall' }
  if (s.originLeafMs != null && (!serving || s.peerBlocks >= slowBlocks)) {
    const peerRate = s.peerBytes / Math.max(1, s.now - s.firstPeerAt)
    const originRate = s.leafBytes / s.originLeafMs
    if (s.now - s.firstPeerAt > s.peerTimeout && peerRate < originRate / 2) return { why: 'slow' }
    at = Math.min(at, s.now + 100)
  }
  return { at }
}

// slowBlocks is how many peer blocks a fetch with a serving holder needs
// before its peers' rate can count as slow (Go's peerRateWindow).
export const slowBlocks = 4

// capWindow is how long a leaf asked of peers waits before the origin is
// asked for it as well: stallTimeout, or three times what a block takes
// from the slowest provider if longer (a busy seed or a tab on WebRTC is
// slow, not gone).
export function capWindow (stallTimeout, slowestMs) {
  return Math.max(stallTimeout, 3 * slowestMs)
}

// capHedges says whether a leaf whose capWindow win has passed now gets
// the origin as well: not while a peer it was asked of has delivered
// another block to this page within the window (it is delivering; the
// leaf is queued behind others there, and a copy from the origin would
// make one of the two sends a waste), up to capMax after it was asked.
// lastBlocks are the times of those peers' last blocks to this page.
export function capHedges ({ now, asked, win, capMax, lastBlocks }) {
  const delivering = lastBlocks.some((t) => now - t < win)
  return !(delivering && now - asked < capMax)
}

// capMove says whom a leaf whose capWindow has passed is asked of
// instead of the origin: serving, a holder not fetching the root that
// serves this page (the seed, in a crowd; client.js's servingOf), when the
// leaf was not asked of it and no peer asked has said HAVE of it (then it
// is on its way); the want is moved there and the window waited again.
// null: the origin is asked as well. Before, a leaf asked of a tab that
// held the root but was slow over WebRTC went to the origin after 2 s
// while the seed was serving this page.
export function capMove ({ asked, coming, serving }) {
  if (coming || serving == null || asked.includes(serving)) return null
  return serving
}

// pickPeer picks, of the providers ok (connected, not asked yet), the
// one that would deliver a block first: the fewest (wants in flight + 1)
// x (what a block has taken from it, peerMs; typical for one not measured
// yet). Ties go to the seed, which the page dialled itself and which
// serves what it announces, else at random (rand() in [0, 1)) so that a
// crowd spreads over holders. Before, a tab that had measured nobody
// asked a random holder, most often another tab, slow over WebRTC, and
// its first files came from the origin while the seed held them.
// outstanding and peerMs are Maps by peer ID; it returns null if ok is
// empty.
export function pickPeer ({ ok, outstanding, peerMs, typical, seed, rand }) {
  if (ok.length === 0) return null
  const score = (p) => ((outstanding.get(p) ?? 0) + 1) * (peerMs.get(p) ?? typical)
  const least = Math.min(...ok.map(score))
  const best = ok.filter((p) => score(p) === least)
  if (seed != null && best.includes(seed)) return seed
  return best[Math.floor(rand() * best.length)]
}

// announceFetch says whether a page that starts to fetch a root tells the
// mesh so at once (a FETCH, announce version 2: the page is then a member
// of the root's stripe, stripe.js), so that tabs and Go nodes wanting the
// root ask it for the blocks it has (its bitswap sends each as it
// arrives, DONT_HAVE first for those it lacks) and split the origin's
// leaves with it:
//   - never for a root it holds;
//   - with no provider known, when it fetches from the origin (the Go
//     side's AnnounceFetches);
//   - with providers, unless the seed it is connected to holds the root
//     (is a provider and not fetching it): a crowd that fetches from tabs
//     (the seed holds nothing) then has every fetching tab serving what it
//     has, and its upload grows with the crowd; before, only tabs that had
//     finished the root (or started it from the origin) were asked, and a
//     20 MiB file's first holder served every later tab. Where the seed
//     holds the root it serves the crowd, and a tab still fetching would
//     only draw wants it answers DONT_HAVE. A seed (or an app a page
//     dials as its seed) that is itself fetching the root is a stripe
//     member like any other.
// s is { held, provs (peer IDs), fetchers (those of provs announcing a
// fetch of the root), seed (the seed's peer ID or null), canOrigin }.
export function announceFetch ({ held, provs, fetchers = [], seed, canOrigin }) {
  if (held) return false
  if (provs.length === 0) return canOrigin
  return seed == null || !provs.includes(seed) || fetchers.includes(seed)
}
