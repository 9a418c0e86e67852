package fetch

import (
	"io"

	bsmsg "github.com/ipfs/boxo/bitswap/message"
	pb "github.com/ipfs/boxo/bitswap/message/pb"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Sending a block without a copy of it. boxo writes a bitswap message by
// marshalling all of it into one pooled buffer, rounded up to a power of
// two: 2 MiB for a message carrying a 1 MiB leaf, held while the stream
// takes it, which is as long as the peer takes to read it. A server with
// perPeerSends sends under way to a peer held 8 MiB of such buffers, as
// much again idle in the pool. streamedMessage writes the same bytes (the
// bitswap 1.1/1.2 wire form: a varint length, then the protobuf message)
// from the message's own parts: the small fields marshalled, each block's
// data written from the block itself, so a send holds nothing beyond the
// block it sends. The receiver cannot tell the difference.

// streamedMessage is a bitswap message whose wire form (ToNetV1) is
// written without a message-sized buffer. The guard's SendMessage hands
// boxo one in place of each message its server sends.
type streamedMessage struct {
	bsmsg.BitSwapMessage
}

// streamed wraps m if it carries blocks; other messages are small and go
// as they are.
func streamed(m bsmsg.BitSwapMessage) bsmsg.BitSwapMessage {
	if len(m.Blocks()) == 0 {
		return m
	}
	return streamedMessage{m}
}

// ToNetV1 writes the message in the bitswap 1.1/1.2 wire form to w: its
// fields in field order, the blocks' data straight from the blocks.
func (m streamedMessage) ToNetV1(w io.Writer) error {
	full := m.ToProtoV1()
	payload := full.Payload
	// The fields before the payload (the want list, and the 1.0 blocks,
	// which V1 leaves empty) and those after it, marshalled apart.
	head, err := proto.Marshal(&pb.Message{Wantlist: full.Wantlist, Blocks: full.Blocks})
	if err != nil {
		return err
	}
	tail, err := proto.Marshal(&pb.Message{BlockPresences: full.BlockPresences, PendingBytes: full.PendingBytes})
	if err != nil {
		return err
	}
	size := len(head) + len(tail)
	for _, b := range payload {
		size += protowire.SizeTag(3) + protowire.SizeBytes(blockSize(b))
	}
	buf := protowire.AppendVarint(make([]byte, 0, 16+len(head)+64), uint64(size))
	buf = append(buf, head...)
	for _, b := range payload {
		buf = protowire.AppendTag(buf, 3, protowire.BytesType)
		buf = protowire.AppendVarint(buf, uint64(blockSize(b)))
		if len(b.Prefix) > 0 {
			buf = protowire.AppendTag(buf, 1, protowire.BytesType)
			buf = protowire.AppendBytes(buf, b.Prefix)
		}
		if len(b.Data) > 0 {
			buf = protowire.AppendTag(buf, 2, protowire.BytesType)
			buf = protowire.AppendVarint(buf, uint64(len(b.Data)))
			if _, err := w.Write(buf); err != nil {
				return err
			}
			if _, err := w.Write(b.Data); err != nil {
				return err
			}
			buf = buf[:0]
		}
	}
	buf = append(buf, tail...)
	_, err = w.Write(buf)
	return err
}

// blockSize is the size of a payload block's protobuf encoding, omitting
// empty fields as proto3 does.
func blockSize(b *pb.Message_Block) int {
	n := 0
	if len(b.Prefix) > 0 {
		n += protowire.SizeTag(1) + protowire.SizeBytes(len(b.Prefix))
	}
	if len(b.Data) > 0 {
		n += protowire.SizeTag(2) + protowire.SizeBytes(len(b.Data))
	}
	return n
}
