// verify checks bytes against a CID: sha2-256 only, as the profile says.
import { sha256 } from 'multiformats/hashes/sha2'

export async function verify (cid, bytes) {
  if (cid.multihash.code !== sha256.code) return false
  const d = (await sha256.digest(bytes)).digest
  const want = cid.multihash.digest
  if (d.length !== want.length) return false
  for (let i = 0; i < d.length; i++) if (d[i] !== want[i]) return false
  return true
}
