package mesh

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
	msmux "github.com/multiformats/go-multistream"
)

// Stale connections. A peer that changed network dials again from its new
// address while this node still holds its old connection, which nothing
// reaches any more: nothing said it closed. go-libp2p opens new streams on
// the connection with the most streams, the old one, so a seed's blocks
// and gossip went into it until yamux's keepalive gave up (30 to 40 s), and
// its sends missed their deadlines until it cut the peer (the audit's lab:
// an app that moved to another subnet reconnected within 1 s, and still
// took every byte of the next 20 s from the origin, its pubsub repair
// redialling every 6 s). So when a peer connects while an older connection
// to it is open, the node pings the peer on that older connection, and
// closes it if no answer comes within staleProbeTimeout. An answer of any
// kind (a peer without the ping protocol says so) shows it alive.

// staleProbeTimeout bounds the ping of an older connection to a peer that
// connected again.
const staleProbeTimeout = 5 * time.Second

// watchStaleConns has the node probe a peer's older connections whenever
// the peer connects again.
func (n *Node) watchStaleConns() {
	n.host.Network().Notify(&network.NotifyBundle{
		ConnectedF: func(_ network.Network, c network.Conn) { n.probeOlder(c) },
	})
}

// probeOlder starts a probe of each direct connection to c's peer opened
// before c, unless one is under way.
func (n *Node) probeOlder(c network.Conn) {
	for _, old := range n.host.Network().ConnsToPeer(c.RemotePeer()) {
		if old == c || old.IsClosed() || old.Stat().Limited || !old.Stat().Opened.Before(c.Stat().Opened) {
			continue
		}
		if _, busy := n.probing.LoadOrStore(old.ID(), true); busy {
			continue
		}
		if !n.spawn(func() {
			defer n.probing.Delete(old.ID())
			n.probeConn(old)
		}) {
			n.probing.Delete(old.ID())
		}
	}
}

// probeConn pings c's peer on c and closes c if the ping times out.
func (n *Node) probeConn(c network.Conn) {
	ctx, cancel := context.WithTimeout(n.ctx, staleProbeTimeout)
	defer cancel()
	err := pingOn(ctx, c)
	if !timedOut(err) || n.ctx.Err() != nil || c.IsClosed() {
		return
	}
	n.log.Info("stale connection closed: the peer connected again, and no answer on the old one", "peer", c.RemotePeer(), "addr", c.RemoteMultiaddr(), "err", err)
	_ = c.Close()
}

// pingOn runs one ping exchange with c's peer on c itself.
func pingOn(ctx context.Context, c network.Conn) error {
	s, err := c.NewStream(ctx)
	if err != nil {
		return err
	}
	defer s.Reset()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { s.Reset() }) // a deadline the stream does not honour
	defer stop()
	if err := msmux.SelectProtoOrFail(ping.ID, s); err != nil {
		return orTimeout(ctx, err)
	}
	_ = s.SetProtocol(ping.ID)
	out := make([]byte, ping.PingSize)
	_, _ = rand.Read(out)
	if _, err := s.Write(out); err != nil {
		return orTimeout(ctx, err)
	}
	in := make([]byte, ping.PingSize)
	if _, err := io.ReadFull(s, in); err != nil {
		return orTimeout(ctx, err)
	}
	if !bytes.Equal(in, out) {
		return errors.New("mesh: ping answered with other bytes")
	}
	return nil
}

// orTimeout is err, or ctx's error if ctx ended (the stream was reset for
// it).
func orTimeout(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// timedOut reports whether err says no answer came in time.
func timedOut(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		errors.As(err, &ne) && ne.Timeout()
}
