package fetch

import (
	"bytes"
	"crypto/rand"
	"errors"
	"sync"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	pb "github.com/ipfs/boxo/bitswap/message/pb"
	blocks "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
	"google.golang.org/protobuf/encoding/protowire"
)

// Receiving a block without copies of it. boxo's bitswap network reads each
// message into a pooled buffer rounded up to a power of two (2 MiB for a
// message carrying a 1 MiB leaf) and decodes it, copying each block out of
// it: with perPeerSends messages arriving at once from a peer, a fetch held
// 8 MiB of such buffers, and more idle in the pool, besides the blocks. The
// inbound filter (inboundStream) reads each block of a message into a
// buffer of the block's size, which becomes the block's bytes, and hands
// boxo the message without its blocks (a few hundred bytes) but with a
// marker: a DONT_HAVE of a CID that names the blocks, kept here, whose
// identity hash holds markerPrefix and a random token. The guard, which
// boxo hands every message it decodes, puts the blocks back in place of
// the marker before bitswap sees the message. Blocks whose message boxo
// drops are let go of when the stream reads its next message or ends.

// markerPrefix starts the digest of a marker CID; a random token follows.
const markerPrefix = "meshcdn/fetch/side-blocks:"

// sideBlocks holds the blocks taken out of messages until the guard puts
// them back. It is safe for concurrent use.
type sideBlocks struct {
	mu    sync.Mutex
	m     map[string][]blocks.Block
	taken int64 // messages whose blocks were taken out, since New
}

func newSideBlocks() *sideBlocks { return &sideBlocks{m: make(map[string][]blocks.Block)} }

// put keeps bs and returns their token.
func (t *sideBlocks) put(bs []blocks.Block) string {
	token := rand.Text()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.m[token] = bs
	t.taken++
	return token
}

// take returns and forgets the blocks of token (nil if there are none).
func (t *sideBlocks) take(token string) []blocks.Block {
	t.mu.Lock()
	defer t.mu.Unlock()
	bs := t.m[token]
	delete(t.m, token)
	return bs
}

// counts returns how many messages' blocks are kept now, and how many
// messages had blocks taken out in all.
func (t *sideBlocks) counts() (held int, taken int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m), t.taken
}

// markerCid is the CID that names the blocks of token.
func markerCid(token string) cid.Cid {
	h, _ := mh.Sum([]byte(markerPrefix+token), mh.IDENTITY, -1) // identity: cannot fail
	return cid.NewCidV1(cid.Raw, h)
}

// markerToken returns the token c names, if it is a marker CID.
func markerToken(c cid.Cid) (string, bool) {
	if c.Prefix().MhType != mh.IDENTITY {
		return "", false
	}
	d, err := mh.Decode(c.Hash())
	if err != nil || !bytes.HasPrefix(d.Digest, []byte(markerPrefix)) {
		return "", false
	}
	return string(d.Digest[len(markerPrefix):]), true
}

// appendMarker appends to a message's fields a block presence (field 4):
// DONT_HAVE of token's marker CID.
func appendMarker(out []byte, token string) []byte {
	var bp []byte
	bp = protowire.AppendTag(bp, 1, protowire.BytesType)
	bp = protowire.AppendBytes(bp, markerCid(token).Bytes())
	bp = protowire.AppendTag(bp, 2, protowire.VarintType)
	bp = protowire.AppendVarint(bp, uint64(pb.Message_DontHave))
	out = protowire.AppendTag(out, 4, protowire.BytesType)
	return protowire.AppendBytes(out, bp)
}

// errBadBlock is what a payload block that does not decode fails with.
var errBadBlock = errors.New("malformed payload block")

// payloadBlock decodes a payload entry (a bitswap 1.1 Block: its CID
// prefix and data) as boxo does: the CID is the prefix's hash of the data.
// The block's bytes are a slice of field.
func payloadBlock(field []byte) (blocks.Block, error) {
	var prefix, data []byte
	for len(field) > 0 {
		num, typ, n := protowire.ConsumeTag(field)
		if n < 0 {
			return nil, errBadBlock
		}
		field = field[n:]
		if typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, field); n < 0 {
				return nil, errBadBlock
			}
			field = field[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(field)
		if n < 0 {
			return nil, errBadBlock
		}
		field = field[n:]
		switch num {
		case 1:
			prefix = v
		case 2:
			data = v
		}
	}
	pref, err := cid.PrefixFromBytes(prefix)
	if err != nil {
		return nil, err
	}
	c, err := pref.Sum(data)
	if err != nil {
		return nil, err
	}
	return blocks.NewBlockWithCid(data, c)
}

// withSideBlocks returns m with the blocks its markers name put back in
// place of the markers; m itself if it has none.
func withSideBlocks(t *sideBlocks, m bsmsg.BitSwapMessage) bsmsg.BitSwapMessage {
	var tokens []string
	for _, bp := range m.BlockPresences() {
		if tok, ok := markerToken(bp.Cid); ok {
			tokens = append(tokens, tok)
		}
	}
	if len(tokens) == 0 {
		return m
	}
	out := withoutAnyPresence(m)
	for _, tok := range tokens {
		for _, b := range t.take(tok) {
			out.AddBlock(b)
		}
	}
	for _, bp := range m.BlockPresences() {
		if _, ok := markerToken(bp.Cid); !ok {
			out.AddBlockPresence(bp.Cid, bp.Type)
		}
	}
	return out
}
