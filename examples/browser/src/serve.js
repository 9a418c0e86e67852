import { base64 } from 'multiformats/bases/base64'
import { varint } from 'multiformats'

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
// A block is sent with write(blocks, presences, wanted, cid) where cid is
// its CID's bytes (from its key and prefix), for a HAVE the caller may
// send ahead of it.
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
      return await write(bs, pres, key == null ? undefined : () => wanted(key), key == null ? undefined : safeCid(key, bs[0].prefix))
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

// cidBytes is the CID of a block of a Helia reply: its key is the
// multihash in multibase base64, its prefix (bitswap 1.1+) the CID's
// version, codec, hash code and length as varints.
export function cidBytes (key, prefix) {
  const mh = base64.decode(key)
  const [version, n1] = varint.decode(prefix)
  const [codec] = varint.decode(prefix, n1)
  const head = new Uint8Array(varint.encodingLength(version) + varint.encodingLength(codec))
  varint.encodeTo(version, head, 0)
  varint.encodeTo(codec, head, varint.encodingLength(version))
  const out = new Uint8Array(head.length + mh.length)
  out.set(head)
  out.set(mh, head.length)
  return out
}

function safeCid (key, prefix) {
  try { return cidBytes(key, prefix) } catch { return undefined } // a HAVE is a hint: none is fine
}
