package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// netLab is a network namespace of the bench's own making, joined to the
// bench's namespace by two veth pairs: the office's LAN (10.231.X.0/24)
// and its WAN link to the origin (10.232.X.0/24), X from the process ID so
// that two benches do not clash. These addresses exist only on those
// veths; Close deletes the namespace, which removes both.
type netLab struct {
	ns       string
	lan, wan string // this side's addresses; the namespace has .2
}

// errNoNetns is why the lab cannot be made: not root, or no ip(8).
var errNoNetns = errors.New("network namespaces need root and ip(8)")

// newNetLab makes the namespace and its links, or returns errNoNetns.
func newNetLab(ctx context.Context) (*netLab, error) {
	if os.Geteuid() != 0 {
		return nil, errNoNetns
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, errNoNetns
	}
	id := os.Getpid() % 1_000_000
	x := id % 250
	lanNet, wanNet := fmt.Sprintf("10.231.%d", x), fmt.Sprintf("10.232.%d", x)
	l := &netLab{ns: fmt.Sprintf("meshcdn-bench-%d", id), lan: lanNet + ".1", wan: wanNet + ".1"}
	cmds := [][]string{{"netns", "add", l.ns}, {"-n", l.ns, "link", "set", "lo", "up"}}
	for _, link := range []struct{ host, peer, net string }{
		{fmt.Sprintf("mcbl%d", id), "lan0", lanNet},
		{fmt.Sprintf("mcbw%d", id), "wan0", wanNet},
	} {
		cmds = append(cmds,
			[]string{"link", "add", link.host, "type", "veth", "peer", "name", link.peer, "netns", l.ns},
			[]string{"addr", "add", link.net + ".1/24", "dev", link.host},
			[]string{"link", "set", link.host, "up"},
			[]string{"-n", l.ns, "addr", "add", link.net + ".2/24", "dev", link.peer},
			[]string{"-n", l.ns, "link", "set", link.peer, "up"})
	}
	for i, c := range cmds {
		if out, err := exec.CommandContext(ctx, "ip", c...).CombinedOutput(); err != nil {
			if i > 0 {
				l.Close()
			}
			return nil, fmt.Errorf("ip %s: %v: %s", strings.Join(c, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return l, nil
}

// Close deletes the namespace and its links.
func (l *netLab) Close() error {
	return exec.Command("ip", "netns", "del", l.ns).Run()
}

// command runs the bench's own executable as a child in the namespace.
func (l *netLab) command(ctx context.Context, args ...string) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.ns, exe, "-child"}, args...)...)
	cmd.Stderr = os.Stderr
	return cmd, nil
}

// delayProxy accepts TCP connections on one address and relays each to
// target, delaying every byte by delay in each direction: the user-space
// stand-in for a link's latency (these kernels have no netem qdisc).
type delayProxy struct {
	ln     net.Listener
	target string
	delay  time.Duration
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
}

// newDelayProxy listens on listen (host:port) and relays to target.
func newDelayProxy(listen, target string, delay time.Duration) (*delayProxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	p := &delayProxy{ln: ln, target: target, delay: delay, conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address the proxy listens on.
func (p *delayProxy) Addr() *net.TCPAddr { return p.ln.Addr().(*net.TCPAddr) }

func (p *delayProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		t, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		if !p.track(c, t) {
			return
		}
		p.wg.Add(2)
		go p.pipe(t, c)
		go p.pipe(c, t)
	}
}

// track remembers the pair for Close, or closes it if the proxy is closed.
func (p *delayProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

// chunk is what was read from one side, and when.
type chunk struct {
	b  []byte
	at time.Time
}

// pipe copies src to dst, each chunk leaving delay after it arrived.
func (p *delayProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	q := make(chan chunk, 1024)
	go func() {
		defer close(q)
		for {
			b := make([]byte, 32<<10)
			n, err := src.Read(b)
			if n > 0 {
				q <- chunk{b[:n], time.Now()}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		time.Sleep(time.Until(c.at.Add(p.delay)))
		if _, err := dst.Write(c.b); err != nil {
			break
		}
	}
	src.Close()
	dst.Close()
	for range q { // the reader ends once src is closed
	}
}

// Close stops the proxy and its connections and waits for them.
func (p *delayProxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

var _ io.Closer = (*delayProxy)(nil)
