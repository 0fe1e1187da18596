package efsnfs

// The caller's identity, for exports without an access point user. EFS
// performs such a client's operations as the uid and gids the client
// sends (AUTH_SYS), root included unless a file system policy withholds
// elasticfilesystem:ClientRootAccess. go-nfs hands its file system only
// a path, never the call's credentials, so Gantry's client adds the
// caller to every file handle it sends (after the handle the server gave,
// which says how long it is: splitHandle), and the server runs the call
// on threads of that identity (a view of the export with an ident of its
// own), so the host kernel checks it as it would the task's own process
// on a local mount. Like AUTH_SYS, it is the client's word: the mount
// helper takes it from the kernel (the FUSE request's uid and gid, and the
// calling process's groups). Exports with an access point user ignore it,
// as EFS does.
//
//	'U' uid(4) gid(4) count(1) gids(4 each)

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
)

type caller struct {
	set      bool
	uid, gid uint32
	groups   []uint32
}

// maxViews bounds the identities one export keeps threads for.
const maxViews = 64

// parseCaller reads what a client added after a handle: nothing, or
// the caller; either followed by the zeros that make the handle a whole
// number of XDR words (padHandle).
func parseCaller(b []byte) (caller, bool) {
	if len(b) < 4 && !slices.ContainsFunc(b, func(c byte) bool { return c != 0 }) {
		return caller{}, true
	}
	if len(b) < 10 || b[0] != 'U' {
		return caller{}, false
	}
	n := 10 + 4*int(b[9])
	if len(b) < n || len(b)-n >= 4 || slices.ContainsFunc(b[n:], func(c byte) bool { return c != 0 }) {
		return caller{}, false
	}
	c := caller{set: true, uid: binary.BigEndian.Uint32(b[1:]), gid: binary.BigEndian.Uint32(b[5:])}
	for i := range int(b[9]) {
		c.groups = append(c.groups, binary.BigEndian.Uint32(b[10+4*i:]))
	}
	return c, true
}

// appendCaller adds the caller to handle fh, with as many of its groups
// as the 64 bytes of an NFSv3 handle leave room for, and pads it.
func appendCaller(fh []byte, uid, gid uint32, groups []uint32) []byte {
	room := (maxFH - len(fh) - 10) / 4
	if room < 0 {
		return padHandle(fh)
	}
	groups = groups[:min(len(groups), room, 255)]
	b := make([]byte, 0, len(fh)+10+4*len(groups))
	b = append(b, fh...)
	b = append(b, 'U')
	b = binary.BigEndian.AppendUint32(b, uid)
	b = binary.BigEndian.AppendUint32(b, gid)
	b = append(b, byte(len(groups)))
	for _, g := range groups {
		b = binary.BigEndian.AppendUint32(b, g)
	}
	return padHandle(b)
}

// padHandle makes fh a whole number of 4-byte words with zeros: go-nfs
// reads a handle without the XDR padding after it (go-nfs-client's
// xdr.ReadOpaque), so the arguments after an unaligned handle (a
// SETATTR's attributes: every chown, chmod and truncate) were read from
// the wrong place. The server's handles end before the caller
// (splitHandle), and parseCaller takes the zeros.
func padHandle(fh []byte) []byte {
	if len(fh)%4 == 0 {
		return fh
	}
	return append(fh[:len(fh):len(fh)], make([]byte, 4-len(fh)%4)...)
}

func (t *tree) top() *tree {
	if t.base != nil {
		return t.base
	}
	return t
}

// as is the export as c sees it: itself for root, for a call without a
// caller, and for an export with an access point user; otherwise a view
// whose calls run as c.
func (t *tree) as(c caller) (*tree, error) {
	t = t.top()
	if t.rootSquash {
		c = squashed(c)
	}
	if !c.set || c.uid == 0 || t.id != nil {
		return t, nil
	}
	groups := slices.Clone(c.groups)
	slices.Sort(groups)
	groups = slices.Compact(groups)
	var key strings.Builder
	fmt.Fprintf(&key, "%d:%d", c.uid, c.gid)
	for _, g := range groups {
		fmt.Fprintf(&key, ",%d", g)
	}
	t.vmu.Lock()
	defer t.vmu.Unlock()
	if v := t.views[key.String()]; v != nil {
		return v, nil
	}
	if t.root < 0 {
		return nil, fmt.Errorf("export closed")
	}
	if len(t.views) >= maxViews {
		return nil, fmt.Errorf("more than %d identities on one export", maxViews)
	}
	id, err := newIdent(c.uid, c.gid, groups)
	if err != nil {
		return nil, err
	}
	v := &tree{root: t.root, xid: t.xid, h: t.h, fds: newFDCache(), id: id, base: t}
	if t.views == nil {
		t.views = map[string]*tree{}
	}
	t.views[key.String()] = v
	return v, nil
}

// all is the export and its views.
func (t *tree) all() []*tree {
	t = t.top()
	t.vmu.Lock()
	defer t.vmu.Unlock()
	out := []*tree{t}
	for _, v := range t.views {
		out = append(out, v)
	}
	return out
}

// squashed is c with root squashed (NFS's root_squash): uid and gid 0
// become 65534, and so does a call that names no caller.
func squashed(c caller) caller {
	const anon = 65534
	if !c.set || c.uid == 0 {
		return caller{set: true, uid: anon, gid: anon}
	}
	out := caller{set: true, uid: c.uid, gid: c.gid}
	if out.gid == 0 {
		out.gid = anon
	}
	for _, g := range c.groups {
		if g == 0 {
			g = anon
		}
		out.groups = append(out.groups, g)
	}
	return out
}
