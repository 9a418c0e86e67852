// Serving: how the page sends the blocks its bitswap (Helia's) hands it
// for a peer. Helia's ledger puts every block a peer wants into one
// message; the page sends them one block per message on its own stream
// (wants.js, reply), each in its turn among the blocks sent to all peers,
// and when the turn comes asks whether the peer still wants the block: a
// CANCEL that arrived meanwhile (the peer got the block elsewhere) means
// the block is not sent at all.

// sendReply sends the blocks [[key, {prefix, data}]] and presences of one
// reply, a message per block (presences with the first), in order:
//   - wanted(key) says whether the peer still wants the block now; a block
//     it no longer wants is skipped (onSkipped(key, n));
//   - write(blocks, presences, wanted) sends one message and resolves true
//     once it is written, or false if, when its turn came, wanted() said
//     no (then it was not written: onSkipped); onSent(key, n) counts each
//     block written.
// It resolves with { sent, skipped } (block counts). A write that fails
// before anything was written rejects with err.written = 0, so that the
// caller may send the rest another way; a later failure rejects with
// err.written > 0 (onFailed(key, n) counts the block that failed).
export async function sendReply ({ blocks = [], presences = [] }, { write, wanted = () => true, onSent = () => {}, onSkipped = () => {}, onFailed = () => {} }) {
  let sent = 0
  let skipped = 0
  let pres = presences
  const attempt = async (bs, key, n) => {
    try {
      return await write(bs, pres, key == null ? undefined : () => wanted(key))
    } catch (err) {
      if (key != null && sent > 0) onFailed(key, n)
      err.written = sent
      throw err
    }
  }
  for (const [key, b] of blocks) {
    const n = b.data.byteLength
    if (!wanted(key) || !await attempt([b], key, n)) {
      skipped++
      onSkipped(key, n)
      continue
    }
    pres = []
    sent++
    onSent(key, n)
  }
  if (pres.length > 0) await attempt([], null, 0)
  return { sent, skipped }
}
