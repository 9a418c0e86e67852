// Package verified marks blocks whose bytes a meshcdn package has already
// checked against their CID (bitswap hashes every block it receives; fetch
// hashes every origin block), so that the store does not hash them a second
// time on Put. Only meshcdn's own packages can make one: a user's block always
// goes through the store's check.
package verified

import blocks "github.com/ipfs/go-block-format"

// Block is a block already checked against its CID.
type Block struct{ blocks.Block }

// Wrap marks b as checked. Call it only on bytes just hashed to b's CID.
func Wrap(b blocks.Block) Block { return Block{b} }
