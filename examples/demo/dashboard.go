package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"time"
)

// startDashboard serves a live page of the run's figures on 127.0.0.1 and
// returns its URL. The page polls /stats.json twice a second.
func startDashboard(snapshot func() *report) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(snapshot())
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(dashboardPage))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}
	return "http://" + ln.Addr().String() + "/", stop, nil
}

const dashboardPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>meshcdn demo</title>
<style>
body{font:15px/1.4 system-ui,sans-serif;margin:2rem;color:#1d2733;background:#f6f8fa}
h1{font-size:1.4rem;margin:0 0 1rem}
.cards{display:flex;gap:1rem;flex-wrap:wrap;margin-bottom:1.5rem}
.card{background:#fff;border-radius:8px;padding:1rem 1.25rem;box-shadow:0 1px 3px #0002;min-width:11rem}
.card b{display:block;font-size:1.8rem}
.bar{height:1.2rem;background:#e25c4b;border-radius:4px;overflow:hidden;margin:.5rem 0 1.5rem;max-width:40rem}
.bar div{height:100%;background:#2b9a66}
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 3px #0002}
td,th{padding:.3rem .8rem;text-align:right;border-bottom:1px solid #eee}
th{background:#eef2f5}td:first-child,th:first-child{text-align:left}
.done{color:#2b9a66}.busy{color:#b07b00}
</style></head><body>
<h1>meshcdn demo: live</h1>
<div class="cards">
<div class="card">offload ratio<b id="offload">-</b></div>
<div class="card">nodes<b id="nodes">-</b></div>
<div class="card">from peers<b id="peer">-</b></div>
<div class="card">from origin<b id="origin">-</b></div>
<div class="card">elapsed<b id="secs">-</b></div>
</div>
<div>bytes by source: <span style="color:#2b9a66">peers</span> / <span style="color:#e25c4b">origin</span></div>
<div class="bar"><div id="split" style="width:0"></div></div>
<table><thead><tr><th>node</th><th>role</th><th>from peers MiB</th><th>from origin MiB</th><th>served MiB</th><th>fetches</th><th>state</th></tr></thead>
<tbody id="rows"></tbody></table>
<script>
const mib = n => (n / 1048576).toFixed(1);
async function tick() {
  try {
    const s = await (await fetch('stats.json', {cache: 'no-store'})).json();
    document.getElementById('offload').textContent = s.offload.toFixed(3);
    document.getElementById('nodes').textContent = (s.nodes || []).length;
    document.getElementById('peer').textContent = mib(s.peer_bytes) + ' MiB';
    document.getElementById('origin').textContent = mib(s.origin_bytes) + ' MiB';
    document.getElementById('secs').textContent = s.seconds.toFixed(1) + ' s';
    document.getElementById('split').style.width = (100 * s.offload).toFixed(1) + '%';
    document.getElementById('rows').innerHTML = (s.nodes || []).map(n =>
      '<tr><td>' + n.name + '</td><td>' + n.role + '</td><td>' + mib(n.peer_bytes) + '</td><td>' +
      mib(n.origin_bytes) + '</td><td>' + mib(n.served_bytes) + '</td><td>' + n.fetches + '</td><td class="' +
      (n.done ? 'done">done' : 'busy">fetching') + '</td></tr>').join('');
  } catch (e) { /* the run may have ended */ }
}
tick(); setInterval(tick, 500);
</script></body></html>
`
