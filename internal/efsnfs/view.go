package efsnfs

// The helper's --view flag: how a mount made for a gVisor sandbox's
// container shows owners (efsfuse.IDView). The access point's user is
// squashed to by the server; the view only changes what the sandbox's
// kernel sees and checks, and maps the sandbox's chowns back.

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/gantry-dev/gantry/internal/efsfuse"
)

// formatView writes v as "UID:GID[:G1,G2...]=CUID:CGID": the access
// point's user, then the container's.
func formatView(v *efsfuse.IDView) string {
	gs := make([]string, len(v.Groups))
	for i, g := range v.Groups {
		gs[i] = strconv.FormatUint(uint64(g), 10)
	}
	s := fmt.Sprintf("%d:%d", v.UID, v.GID)
	if len(gs) > 0 {
		s += ":" + strings.Join(gs, ",")
	}
	return s + "=" + v.Client.String()
}

// parseView reads formatView's form; "" is no view.
func parseView(s string) (*efsfuse.IDView, error) {
	if s == "" {
		return nil, nil
	}
	bad := fmt.Errorf("--view: %q is not UID:GID[:G1,G2...]=UID:GID", s)
	user, client, ok := strings.Cut(s, "=")
	if !ok {
		return nil, bad
	}
	id := func(s string) (uint32, bool) {
		n, err := strconv.ParseUint(s, 10, 32)
		return uint32(n), err == nil
	}
	f := strings.Split(user, ":")
	if len(f) < 2 || len(f) > 3 {
		return nil, bad
	}
	v := &efsfuse.IDView{Client: &efsfuse.Client{}}
	var ok1, ok2, ok3, ok4 bool
	v.UID, ok1 = id(f[0])
	v.GID, ok2 = id(f[1])
	if len(f) == 3 {
		for _, g := range strings.Split(f[2], ",") {
			n, ok := id(g)
			if !ok {
				return nil, bad
			}
			v.Groups = append(v.Groups, n)
		}
	}
	cu, cg, ok := strings.Cut(client, ":")
	v.Client.UID, ok3 = id(cu)
	v.Client.GID, ok4 = id(cg)
	if !ok || !ok1 || !ok2 || !ok3 || !ok4 {
		return nil, bad
	}
	return v, nil
}
