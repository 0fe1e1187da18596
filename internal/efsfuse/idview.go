package efsfuse

// Ownership under a gVisor sandbox, shared by the local access point
// mounts (tree) and the NFS mount helper (internal/efsnfs), which meet
// the same gVisor checks.
//
// EFS decides on the server, as the access point's user, whatever the
// client's user is; gVisor's kernel checks permissions itself, against
// the owners a file shows and the container's user, before the host sees
// a request. So a mount made for a sandbox shows the access point's uid
// as the client's, and the access point's gids (primary and secondary) as
// the client's gid: the sandbox then allows the container's user what it
// allows the access point's user on the server, which still decides. The
// client's own ids, where a file really has them, show as the overflow
// ids (nobody), as NFS shows ids it cannot map, so the sandbox does not
// take the container's user for their owner. A root client passes the
// sandbox's checks by its capabilities: it sees the real owners, as on
// EFS.
const overflowID = 65534

// IDView is how a mount made for a sandboxed container shows and takes
// owners: the access point's POSIX user (UID, GID, Groups) and the
// container's user (Client, nil outside a sandbox, where ids pass as
// they are).
type IDView struct {
	UID, GID uint32
	Groups   []uint32
	Client   *Client
}

// shows reports whether replies present the access point's ids as the
// client's: not for a root client, whose capabilities need no stand-in.
func (v *IDView) shows() bool { return v.Client != nil && v.Client.UID != 0 }

// ShowUID is the owner a file of host uid u shows.
func (v *IDView) ShowUID(u uint32) uint32 {
	switch {
	case !v.shows():
		return u
	case u == v.UID:
		return v.Client.UID
	case u == v.Client.UID:
		return overflowID
	}
	return u
}

// ShowGID is the group a file of host gid g shows.
func (v *IDView) ShowGID(g uint32) uint32 {
	switch {
	case !v.shows():
		return g
	case v.InGroups(g):
		return v.Client.GID
	case g == v.Client.GID:
		return overflowID
	}
	return g
}

// OwnerUID is the host uid a chown names. As on EFS, the host then
// decides as the access point's user: a chown to that user (of its own
// file) succeeds, a chown to anyone else is EPERM, as an NFS server that
// squashes the client's user answers. The client's uid stands for the
// access point's user: gVisor's gofer chowns every file it creates to
// the container's user and fails the create if that fails.
func (v *IDView) OwnerUID(u uint32) uint32 {
	if v.Client != nil && u == v.Client.UID {
		return v.UID
	}
	return u
}

// OwnerGID is the host gid a chgrp names, the file having cur: the
// client's gid stands for the access point's groups, so it keeps a gid
// that is one of them (the group a set-gid directory gave a new file)
// and is the access point's primary gid otherwise.
func (v *IDView) OwnerGID(g, cur uint32) uint32 {
	if v.Client == nil || g != v.Client.GID {
		return g
	}
	if v.InGroups(cur) {
		return cur
	}
	return v.GID
}

// InGroups reports whether g is one of the access point's groups.
func (v *IDView) InGroups(g uint32) bool {
	if g == v.GID {
		return true
	}
	for _, s := range v.Groups {
		if s == g {
			return true
		}
	}
	return false
}
