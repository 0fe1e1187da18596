package efsnfs

import (
	"slices"
	"testing"
)

// An export without ClientRootAccess runs root's calls (and calls that
// name no caller) as 65534, and any gid 0 as 65534; other ids are kept.
func TestSquashed(t *testing.T) {
	for _, tc := range []struct {
		in, want caller
	}{
		{caller{}, caller{set: true, uid: 65534, gid: 65534}},
		{caller{set: true, uid: 0, gid: 0, groups: []uint32{0, 10}}, caller{set: true, uid: 65534, gid: 65534}},
		{caller{set: true, uid: 0, gid: 1000}, caller{set: true, uid: 65534, gid: 65534}},
		{caller{set: true, uid: 1234, gid: 0, groups: []uint32{0, 2000}}, caller{set: true, uid: 1234, gid: 65534, groups: []uint32{65534, 2000}}},
		{caller{set: true, uid: 1234, gid: 1234, groups: []uint32{2000}}, caller{set: true, uid: 1234, gid: 1234, groups: []uint32{2000}}},
	} {
		got := squashed(tc.in)
		if got.set != tc.want.set || got.uid != tc.want.uid || got.gid != tc.want.gid || !slices.Equal(got.groups, tc.want.groups) {
			t.Errorf("squashed(%+v) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}
