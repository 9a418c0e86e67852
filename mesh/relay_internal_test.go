package mesh

import (
	"testing"
	"time"
)

// TestRelayLimitsDefaults: a seed's relay and per-address limits come from
// its role's defaults field by field; a negative field means no limit and a
// set one stays.
func TestRelayLimitsDefaults(t *testing.T) {
	seed := (Config{Role: RoleSeed, Relay: RelayLimits{ReservationsPerIP: -1, CircuitsPerPeer: 5}}).withDefaults()
	r := seed.Relay
	if r.ReservationsPerIP != -1 || r.CircuitsPerPeer != 5 || r.Reservations != 1024 || r.ConnsPerIP != 256 || r.CircuitBytes != 128<<10 || r.CircuitDuration != time.Minute {
		t.Errorf("seed relay limits %+v", r)
	}
	rc := relayResources(r)
	if rc.MaxReservationsPerIP < 1<<30 || rc.MaxCircuits != 5 || rc.Limit == nil || rc.Limit.Data != 128<<10 {
		t.Errorf("relay resources %+v", rc)
	}
	app := (Config{Role: RoleApp}).withDefaults().Relay
	if app.ReservationsPerIP != 8 || app.ConnsPerIP != 8 || app.CircuitDuration != 2*time.Minute {
		t.Errorf("app relay limits %+v", app)
	}
}
