package meshtest

import (
	"slices"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/meshcdn/meshcdn/mesh"
)

// Report is what a Crowd did. Times are from the start of Run.
type Report struct {
	// Assets and SiteBytes describe the site: its asset count and size.
	Assets    int
	SiteBytes int64
	// Seeds and Apps count the nodes asked for.
	Seeds, Apps int
	// AppsStart is when the apps' phase began (the seeds had pinned the
	// site and every app had started); End when the last app was done
	// (0 while running).
	AppsStart, End time.Duration
	// OriginSent is what the origin sent since Run began, the seeds' copies
	// included; AppOriginSent only what it sent since AppsStart.
	OriginSent, AppOriginSent int64
	// Copies is OriginSent over SiteBytes: the origin's egress in copies
	// of the site; AppCopies is AppOriginSent over SiteBytes.
	Copies, AppCopies float64
	// PeerBytes and OriginBytes are the bytes every node's fetches took
	// from peers and from the origin (the first verified copy of each
	// leaf), seeds included; AppPeerBytes and AppOriginBytes the apps'.
	PeerBytes, OriginBytes       int64
	AppPeerBytes, AppOriginBytes int64
	// Offload is PeerBytes over PeerBytes+OriginBytes, seeds included;
	// AppOffload the same for the apps alone.
	Offload, AppOffload float64
	// Nodes holds every node started: seeds first, then apps, by name
	// (app-1 is the first to arrive).
	Nodes []NodeReport
	// Fetches holds every fetch finished, in the order they finished per
	// node.
	Fetches []FetchReport
}

// NodeReport is one node's part of a Report.
type NodeReport struct {
	Name string
	Role mesh.Role
	Peer string
	// Arrival is when an app arrived (0 for seeds); Done when its last
	// fetch ended (0 until then).
	Arrival, Done time.Duration
	// Fetches counts its finished fetches; Failed those that failed.
	Fetches, Failed int
	// Stats is the node's own accounting when the Report was made.
	Stats mesh.Stats
	// Links counts the other nodes of the crowd it was connected to when
	// the Report was made: the graph a crowd's figures come from. Apps
	// that arrive together while the first few are still the only ones
	// started may all reach only those few, and take only what those
	// serve.
	Links int
}

// FetchReport is one asset fetch of one node.
type FetchReport struct {
	Node, Path string
	Role       mesh.Role
	// Start is when the fetch began; TTFB the time from Open to its first
	// byte (fetch.Stats.TTFB); Duration from Open to the last byte read.
	Start, TTFB, Duration time.Duration
	Size                  int64
	// PeerBytes, OriginBytes and LocalBytes are fetch.Stats' counts.
	PeerBytes, OriginBytes, LocalBytes int64
	// Hedged reports that the origin was asked while peers were.
	Hedged bool
	// Err is the fetch's error, empty when every byte arrived and matched
	// the site.
	Err string
}

// Source says where a fetch's bytes came from: "peer" or "origin" when all
// from one, "mixed" when from both, "local" when from the store only.
func (f FetchReport) Source() string {
	switch {
	case f.PeerBytes > 0 && f.OriginBytes > 0:
		return "mixed"
	case f.PeerBytes > 0:
		return "peer"
	case f.OriginBytes > 0:
		return "origin"
	}
	return "local"
}

// Report returns the crowd's figures now; it may be called while Run runs.
func (c *Crowd) Report() *Report {
	c.mu.Lock()
	members := slices.Clone(c.members)
	r := &Report{Assets: len(c.m.Assets), Seeds: c.cfg.Seeds, Apps: c.cfg.Apps, AppsStart: c.phase, End: c.end}
	sent := c.cfg.Origin.Sent()
	r.OriginSent = sent - c.sent0
	if c.phase > 0 {
		r.AppOriginSent = sent - c.sentApp
	}
	c.mu.Unlock()
	for _, a := range c.m.Assets {
		r.SiteBytes += a.Size
	}
	links := crowdLinks(members)
	for k, mb := range members {
		nr := mb.report()
		nr.Links = links[k]
		r.Nodes = append(r.Nodes, nr)
		mb.mu.Lock()
		r.Fetches = append(r.Fetches, mb.fetches...)
		mb.mu.Unlock()
		r.PeerBytes += nr.Stats.Fetch.PeerBytes
		r.OriginBytes += nr.Stats.Fetch.OriginBytes
		if nr.Role == mesh.RoleApp {
			r.AppPeerBytes += nr.Stats.Fetch.PeerBytes
			r.AppOriginBytes += nr.Stats.Fetch.OriginBytes
		}
	}
	slices.SortStableFunc(r.Nodes, func(a, b NodeReport) int {
		if a.Role != b.Role {
			return strings.Compare(string(b.Role), string(a.Role)) // seeds first
		}
		return strings.Compare(a.Name, b.Name)
	})
	r.Offload = ratio(r.PeerBytes, r.PeerBytes+r.OriginBytes)
	r.AppOffload = ratio(r.AppPeerBytes, r.AppPeerBytes+r.AppOriginBytes)
	r.Copies = ratio(r.OriginSent, r.SiteBytes)
	r.AppCopies = ratio(r.AppOriginSent, r.SiteBytes)
	return r
}

// crowdLinks counts, for each member, the other members its host is
// connected to.
func crowdLinks(members []*member) []int {
	links := make([]int, len(members))
	for k, mb := range members {
		nw := mb.node.Host().Network()
		for j, o := range members {
			if j != k && nw.Connectedness(o.node.ID()) == network.Connected {
				links[k]++
			}
		}
	}
	return links
}

func (mb *member) report() NodeReport {
	st := mb.node.Stats()
	mb.mu.Lock()
	defer mb.mu.Unlock()
	nr := NodeReport{Name: mb.name, Role: mb.role, Peer: mb.node.ID().String(), Arrival: mb.arrival, Done: mb.done,
		Fetches: len(mb.fetches), Stats: st}
	for _, f := range mb.fetches {
		if f.Err != "" {
			nr.Failed++
		}
	}
	return nr
}

func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// TTFBs returns the TTFB of every successful fetch that keep accepts (nil
// keep: all).
func (r *Report) TTFBs(keep func(FetchReport) bool) []time.Duration {
	return r.times(keep, func(f FetchReport) time.Duration { return f.TTFB })
}

// Durations returns the Duration of every successful fetch that keep
// accepts (nil keep: all).
func (r *Report) Durations(keep func(FetchReport) bool) []time.Duration {
	return r.times(keep, func(f FetchReport) time.Duration { return f.Duration })
}

func (r *Report) times(keep func(FetchReport) bool, of func(FetchReport) time.Duration) []time.Duration {
	var ds []time.Duration
	for _, f := range r.Fetches {
		if f.Err == "" && (keep == nil || keep(f)) {
			ds = append(ds, of(f))
		}
	}
	return ds
}

// Completions returns how long each app node took from its arrival to the
// end of its last fetch, for the apps that are done.
func (r *Report) Completions() []time.Duration {
	var ds []time.Duration
	for _, n := range r.Nodes {
		if n.Role == mesh.RoleApp && n.Done > 0 {
			ds = append(ds, n.Done-n.Arrival)
		}
	}
	return ds
}

// AppLinks returns each app node's Links, fewest first.
func (r *Report) AppLinks() []int {
	var ls []int
	for _, n := range r.Nodes {
		if n.Role == mesh.RoleApp {
			ls = append(ls, n.Links)
		}
	}
	slices.Sort(ls)
	return ls
}

// FromApps keeps the fetches of app nodes, for TTFBs and Durations.
func FromApps(f FetchReport) bool { return f.Role == mesh.RoleApp }

// Percentile returns the p-quantile (0 ≤ p ≤ 1) of ds by nearest rank
// below: the element at index ⌊p·(len−1)⌋ of ds sorted; 0 for none. ds is
// not changed.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[int(p*float64(len(s)-1))]
}
