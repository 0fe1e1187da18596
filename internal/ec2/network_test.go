package ec2

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/gantry-dev/gantry/internal/state"
)

func TestDefaultVPCRange(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		cidr    string
		subnets []string
	}{
		{"", []string{"172.31.0.0/20", "172.31.16.0/20", "172.31.32.0/20"}},
		{"10.88.0.0/16", []string{"10.88.0.0/20", "10.88.16.0/20", "10.88.32.0/20"}},
		{"192.168.4.0/24", []string{"192.168.4.0/28", "192.168.4.16/28", "192.168.4.32/28"}},
	} {
		store, err := state.OpenSQLite(filepath.Join(t.TempDir(), "state.db"))
		if err != nil {
			t.Fatal(err)
		}
		if err := EnsureDefaultVPC(ctx, store, "000000000000", "us-east-1", c.cidr); err != nil {
			t.Fatal(err)
		}
		var got []string
		store.View(ctx, func(tx state.Tx) error {
			subs, err := DefaultSubnets(tx, "000000000000", "us-east-1")
			for _, s := range subs {
				got = append(got, s.CIDR)
			}
			return err
		})
		slices.Sort(got)
		if !slices.Equal(got, c.subnets) {
			t.Errorf("%q: subnets %v, want %v", c.cidr, got, c.subnets)
		}
		store.Close()
	}
	for _, bad := range []string{"10.88.0.0/8", "10.88.0.0/25", "10.88.1.0/16", "fd00::/64", "nonsense"} {
		store, _ := state.OpenSQLite(filepath.Join(t.TempDir(), "state.db"))
		if err := EnsureDefaultVPC(ctx, store, "000000000000", "us-east-1", bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
		store.Close()
	}
}
