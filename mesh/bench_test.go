package mesh_test

import (
	"context"
	"runtime"
	"testing"

	"github.com/meshcdn/meshcdn/mesh"
)

// BenchmarkNodeFootprint starts 10 app nodes on badger stores, connected to
// one seed, and reports what each costs when idle: Go heap and stacks, and
// goroutines.
//
//	go test -run '^$' -bench NodeFootprint -benchtime 3x ./mesh
func BenchmarkNodeFootprint(b *testing.B) {
	const nodes = 10
	for b.Loop() {
		b.StopTimer()
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		g0 := runtime.NumGoroutine()
		ctx := context.Background()
		seed, err := mesh.New(ctx, mesh.Config{Name: "fp", Role: mesh.RoleSeed, DataDir: b.TempDir(), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, MDNS: mesh.Off})
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		var seedMem runtime.MemStats
		runtime.ReadMemStats(&seedMem)
		g1 := runtime.NumGoroutine()
		var ns []*mesh.Node
		for range nodes {
			n, err := mesh.New(ctx, mesh.Config{Name: "fp", DataDir: b.TempDir(), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
				MDNS: mesh.Off, NATPortMap: mesh.Off, Bootstrap: []string{seed.Addrs()[0].String()}})
			if err != nil {
				b.Fatal(err)
			}
			if err := n.WaitPeers(ctx, 1); err != nil {
				b.Fatal(err)
			}
			ns = append(ns, n)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		g2 := runtime.NumGoroutine()
		used := func(m runtime.MemStats) float64 { return float64(m.HeapInuse + m.StackInuse) }
		b.ReportMetric((used(after)-used(seedMem))/nodes/(1<<20), "MiB/app-node")
		b.ReportMetric((used(seedMem)-used(before))/(1<<20), "MiB/seed")
		b.ReportMetric(float64(g2-g1)/nodes, "goroutines/app-node")
		b.ReportMetric(float64(g1-g0), "goroutines/seed")
		for _, n := range ns {
			n.Close()
		}
		seed.Close()
		b.StartTimer()
	}
}
