//go:build fault

package mesh_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/meshcdn/meshcdn/mesh"
)

// Attackers that hold streams open on a node's protocols (identify's,
// the resource manager's memory): raw hosts that negotiate a protocol
// and then say nothing.

// openIdle opens a stream from h to p and negotiates proto on it; on a
// bitswap stream it then sends one empty message, so that the stream is
// not reset as silent (fetch's firstMessageWait) but kept as idle between
// messages.
func openIdle(ctx context.Context, h host.Host, p peer.ID, proto protocol.ID) (network.Stream, error) {
	s, err := h.Network().NewStream(ctx, p)
	if err != nil {
		return nil, err
	}
	_ = s.SetDeadline(time.Now().Add(5 * time.Second))
	if err := selectProto(s, proto); err != nil {
		s.Reset()
		return nil, err
	}
	if isBitswap(proto) {
		if _, err := s.Write([]byte{0x02, 0x0a, 0x00}); err != nil { // a message with an empty want list
			s.Reset()
			return nil, err
		}
	}
	_ = s.SetDeadline(time.Time{})
	return s, nil
}

// selectProto proposes proto on s in multistream-select 1.0.0 and waits
// for it to be accepted.
func selectProto(s io.ReadWriter, proto protocol.ID) error {
	var out []byte
	for _, line := range []string{"/multistream/1.0.0", string(proto)} {
		out = binary.AppendUvarint(out, uint64(len(line)+1))
		out = append(append(out, line...), '\n')
	}
	if _, err := s.Write(out); err != nil {
		return err
	}
	in := make([]byte, len(out)) // both lines echoed: accepted
	if _, err := io.ReadFull(s, in); err != nil {
		return err
	}
	if !bytes.Equal(in, out) {
		return errors.New("protocol not accepted")
	}
	return nil
}

func isBitswap(p protocol.ID) bool {
	for _, b := range bitswapProtocols {
		if p == b {
			return true
		}
	}
	return false
}

// holdStreams makes h hold streams on each of protos, as many as n
// admits: each protocol's streams are opened one after the other until n
// refuses one, negotiated and then left idle. A stream n ends after a
// second or more is opened again (n resets idle streams on a timeout, or
// closed the connection, and the attacker comes back); one n ends sooner
// (identify's request, a gossipsub stream replaced by the next) is not.
// It returns how many it opened; the holders are counted in wg and end
// with ctx.
func holdStreams(ctx context.Context, h host.Host, n *mesh.Node, protos []protocol.ID, wg *sync.WaitGroup) int {
	target := n.ID()
	opened := 0
	for _, proto := range protos {
		for range 100 {
			s, err := openIdle(ctx, h, target, proto)
			if err != nil {
				break // refused: this protocol's share is taken
			}
			opened++
			wg.Add(1)
			go func() {
				defer wg.Done()
				keepIdle(ctx, h, target, proto, s)
			}()
		}
	}
	return opened
}

// keepIdle holds s until its peer ends it, then opens another stream of
// proto in its place, as long as the last one lived a second or more.
func keepIdle(ctx context.Context, h host.Host, p peer.ID, proto protocol.ID, s network.Stream) {
	for {
		began := time.Now()
		stop := context.AfterFunc(ctx, func() { s.Reset() })
		_, _ = io.Copy(io.Discard, s)
		stop()
		s.Reset()
		if ctx.Err() != nil || time.Since(began) < time.Second || !reopen(ctx, h, p, proto, &s) {
			return
		}
	}
}

// reopen opens a stream of proto from h to p into *s, trying again every
// second while p refuses it, until ctx ends (false).
func reopen(ctx context.Context, h host.Host, p peer.ID, proto protocol.ID, s *network.Stream) bool {
	for {
		var err error
		if *s, err = openIdle(ctx, h, p, proto); err == nil {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Second):
		}
	}
}
