package efs

import (
	"reflect"
	"strings"

	"github.com/gantry-dev/gantry/internal/state"
)

// MaxAccessPoints is how many access points one file system may have.
const MaxAccessPoints = 10000

type createAccessPointIn struct {
	ClientToken   string
	FileSystemId  string
	PosixUser     *PosixUser
	RootDirectory *RootDirectory
	Tags          []Tag
}

const maxID = 4294967295

func checkID(name string, v *int64) error {
	if v == nil {
		return badRequest("%s is required.", name)
	}
	if *v < 0 || *v > maxID {
		return badRequest("%s must be between 0 and %d.", name, int64(maxID))
	}
	return nil
}

func checkAccessPoint(in *createAccessPointIn) error {
	switch {
	case in.ClientToken == "":
		return badRequest("ClientToken is required.")
	case len(in.ClientToken) > 64:
		return badRequest("ClientToken must be at most 64 characters long.")
	}
	if err := checkFSID(in.FileSystemId); err != nil {
		return err
	}
	if u := in.PosixUser; u != nil {
		if err := checkID("PosixUser.Uid", u.Uid); err != nil {
			return err
		}
		if err := checkID("PosixUser.Gid", u.Gid); err != nil {
			return err
		}
		if len(u.SecondaryGids) > 16 {
			return badRequest("PosixUser.SecondaryGids can hold at most 16 ids.")
		}
		for i := range u.SecondaryGids {
			if err := checkID("PosixUser.SecondaryGids", &u.SecondaryGids[i]); err != nil {
				return err
			}
		}
	}
	if rd := in.RootDirectory; rd != nil {
		if rd.Path == "" {
			rd.Path = "/"
		}
		if len(rd.Path) > 100 || !reAPPath.MatchString(rd.Path) {
			return badRequest("Invalid RootDirectory Path '%s': an absolute path of at most four components, at most 100 characters.", rd.Path)
		}
		for _, part := range strings.Split(rd.Path, "/") {
			if strings.HasPrefix(part, ".") {
				return badRequest("Invalid RootDirectory Path '%s': components may not start with '.'.", rd.Path)
			}
		}
		if ci := rd.CreationInfo; ci != nil {
			if err := checkID("CreationInfo.OwnerUid", ci.OwnerUid); err != nil {
				return err
			}
			if err := checkID("CreationInfo.OwnerGid", ci.OwnerGid); err != nil {
				return err
			}
			if !rePerms.MatchString(ci.Permissions) {
				return badRequest("Invalid CreationInfo.Permissions '%s': three or four octal digits.", ci.Permissions)
			}
		}
	}
	return checkTags(in.Tags)
}

func (s *Service) createAccessPoint(c *call) (any, int, error) {
	var in createAccessPointIn
	if err := c.decode(&in); err != nil {
		return nil, 0, err
	}
	if err := checkAccessPoint(&in); err != nil {
		return nil, 0, err
	}
	fsID := bareID(in.FileSystemId)
	var ap *AccessPoint
	err := s.Store.Update(c.ctx, func(tx state.Tx) error {
		ap = nil
		f, err := LookupFileSystem(tx, c.account, c.region, fsID)
		if err != nil {
			return err
		}
		if f == nil {
			return fsNotFound(fsID)
		}
		all, err := state.List[AccessPoint](tx, KindAccessPoint, scope(c.account, c.region))
		if err != nil {
			return err
		}
		n := 0
		for i := range all {
			o := &all[i]
			if o.FileSystemID == fsID {
				n++
			}
			if o.ClientToken != in.ClientToken {
				continue
			}
			// A retried call with the same token and request gets the
			// same access point; a different request is a conflict.
			if o.FileSystemID == fsID && reflect.DeepEqual(o.PosixUser, in.PosixUser) && reflect.DeepEqual(o.RootDirectory, in.RootDirectory) {
				ap = o
				return nil
			}
			e := errorf("AccessPointAlreadyExists", "An access point with client token '%s' already exists.", in.ClientToken)
			e.Extra = map[string]string{"AccessPointId": o.ID}
			return e
		}
		if n >= MaxAccessPoints {
			return errorf("AccessPointLimitExceeded", "File system '%s' has the maximum of %d access points.", fsID, MaxAccessPoints)
		}
		ap = &AccessPoint{
			ID: newID("fsap-"), OwnerID: c.account, FileSystemID: fsID, ClientToken: in.ClientToken,
			PosixUser: in.PosixUser, RootDirectory: in.RootDirectory, Tags: in.Tags,
		}
		ap.ARN = "arn:aws:elasticfilesystem:" + c.region + ":" + c.account + ":access-point/" + ap.ID
		return tx.Put(KindAccessPoint, scope(c.account, c.region)+ap.ID, ap)
	})
	if err != nil {
		return nil, 0, err
	}
	out := accessPointDesc(ap)
	out["LifeCycleState"] = "creating"
	return out, 200, nil
}

func accessPointDesc(ap *AccessPoint) map[string]any {
	tags := ap.Tags
	if tags == nil {
		tags = []Tag{}
	}
	out := map[string]any{
		"ClientToken":    ap.ClientToken,
		"Tags":           tags,
		"AccessPointId":  ap.ID,
		"AccessPointArn": ap.ARN,
		"FileSystemId":   ap.FileSystemID,
		"OwnerId":        ap.OwnerID,
		"LifeCycleState": "available",
		"RootDirectory":  RootDirectory{Path: ap.Root()},
	}
	if ap.RootDirectory != nil {
		out["RootDirectory"] = RootDirectory{Path: ap.Root(), CreationInfo: ap.RootDirectory.CreationInfo}
	}
	if ap.PosixUser != nil {
		out["PosixUser"] = ap.PosixUser
	}
	for _, t := range ap.Tags {
		if t.Key == "Name" {
			out["Name"] = t.Value
		}
	}
	return out
}

func (s *Service) describeAccessPoints(c *call) (any, int, error) {
	limit, marker, err := pageArgs(c, "MaxResults", "NextToken")
	if err != nil {
		return nil, 0, err
	}
	apID, fsID := c.query.Get("AccessPointId"), c.query.Get("FileSystemId")
	if apID != "" && fsID != "" {
		return nil, 0, badRequest("Specify AccessPointId or FileSystemId, not both.")
	}
	if apID != "" && !reAPID.MatchString(apID) {
		return nil, 0, badRequest("Invalid access point id '%s'.", apID)
	}
	if fsID != "" {
		if err := checkFSID(fsID); err != nil {
			return nil, 0, err
		}
	}
	var list []AccessPoint
	err = s.Store.View(c.ctx, func(tx state.Tx) error {
		list = nil
		if apID != "" {
			ap, err := LookupAccessPoint(tx, c.account, c.region, apID)
			if err != nil {
				return err
			}
			if ap == nil {
				return errorf("AccessPointNotFound", "Access point '%s' does not exist.", bareID(apID))
			}
			list = []AccessPoint{*ap}
			return nil
		}
		if fsID != "" {
			f, err := LookupFileSystem(tx, c.account, c.region, fsID)
			if err != nil {
				return err
			}
			if f == nil {
				return fsNotFound(bareID(fsID))
			}
		}
		all, err := state.List[AccessPoint](tx, KindAccessPoint, scope(c.account, c.region))
		for _, ap := range all {
			if fsID == "" || ap.FileSystemID == bareID(fsID) {
				list = append(list, ap)
			}
		}
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	pg, next, err := page(list, func(a AccessPoint) string { return a.ID }, marker, limit)
	if err != nil {
		return nil, 0, err
	}
	descs := []any{}
	for i := range pg {
		descs = append(descs, accessPointDesc(&pg[i]))
	}
	out := map[string]any{"AccessPoints": descs}
	if next != "" {
		out["NextToken"] = next
	}
	return out, 200, nil
}

func (s *Service) deleteAccessPoint(c *call) (any, int, error) {
	id := c.params[0]
	if !reAPID.MatchString(id) {
		return nil, 0, badRequest("Invalid access point id '%s'.", id)
	}
	id = bareID(id)
	err := s.Store.Update(c.ctx, func(tx state.Tx) error {
		ok, err := tx.Delete(KindAccessPoint, scope(c.account, c.region)+id)
		if err == nil && !ok {
			err = errorf("AccessPointNotFound", "Access point '%s' does not exist.", id)
		}
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	return nil, 204, nil
}

// Tags of file systems and access points.

// withTagged runs fn on the tags of resource params[0] and, when write,
// stores them.
func (s *Service) withTagged(c *call, write bool, fn func(tags []Tag) ([]Tag, error)) error {
	id := c.params[0]
	isAP := reAPID.MatchString(id)
	if !isAP && !reFSID.MatchString(id) {
		return badRequest("Invalid resource id '%s'.", id)
	}
	id = bareID(id)
	body := func(tx state.Tx) error {
		if isAP {
			ap, err := LookupAccessPoint(tx, c.account, c.region, id)
			if err != nil {
				return err
			}
			if ap == nil {
				return errorf("AccessPointNotFound", "Access point '%s' does not exist.", id)
			}
			if ap.Tags, err = fn(ap.Tags); err != nil || !write {
				return err
			}
			return tx.Put(KindAccessPoint, scope(c.account, c.region)+id, ap)
		}
		f, err := LookupFileSystem(tx, c.account, c.region, id)
		if err != nil {
			return err
		}
		if f == nil {
			return fsNotFound(id)
		}
		if f.Tags, err = fn(f.Tags); err != nil || !write {
			return err
		}
		return tx.Put(KindFileSystem, scope(c.account, c.region)+id, f)
	}
	if write {
		return s.Store.Update(c.ctx, body)
	}
	return s.Store.View(c.ctx, body)
}

func (s *Service) tagResource(c *call) (any, int, error) {
	var in struct{ Tags []Tag }
	if err := c.decode(&in); err != nil {
		return nil, 0, err
	}
	if len(in.Tags) == 0 {
		return nil, 0, badRequest("Tags is required.")
	}
	if err := checkTags(in.Tags); err != nil {
		return nil, 0, err
	}
	err := s.withTagged(c, true, func(tags []Tag) ([]Tag, error) {
		out := mergeTags(tags, in.Tags)
		if len(out) > 50 {
			return nil, badRequest("A resource can have at most 50 tags.")
		}
		return out, nil
	})
	if err != nil {
		return nil, 0, err
	}
	return nil, 200, nil
}

func (s *Service) untagResource(c *call) (any, int, error) {
	keys := c.query["tagKeys"]
	if len(keys) == 0 {
		return nil, 0, badRequest("TagKeys is required.")
	}
	err := s.withTagged(c, true, func(tags []Tag) ([]Tag, error) {
		var out []Tag
		for _, t := range tags {
			drop := false
			for _, k := range keys {
				drop = drop || k == t.Key
			}
			if !drop {
				out = append(out, t)
			}
		}
		return out, nil
	})
	if err != nil {
		return nil, 0, err
	}
	return nil, 200, nil
}

func (s *Service) listTags(c *call) (any, int, error) {
	limit, marker, err := pageArgs(c, "MaxResults", "NextToken")
	if err != nil {
		return nil, 0, err
	}
	var all []Tag
	err = s.withTagged(c, false, func(tags []Tag) ([]Tag, error) { all = tags; return tags, nil })
	if err != nil {
		return nil, 0, err
	}
	// Tags page by position; the token is the index of the next tag.
	start := 0
	if marker != "" {
		n, ok := 0, true
		for _, ch := range marker {
			if ch < '0' || ch > '9' {
				ok = false
				break
			}
			n = n*10 + int(ch-'0')
			if n > 1<<20 {
				ok = false
				break
			}
		}
		if !ok {
			return nil, 0, badRequest("Invalid NextToken '%s'.", marker)
		}
		start = min(n, len(all))
	}
	pg := all[start:]
	out := map[string]any{}
	if len(pg) > limit {
		pg = pg[:limit]
		out["NextToken"] = itoa(start + limit)
	}
	if pg == nil {
		pg = []Tag{}
	}
	out["Tags"] = pg
	return out, 200, nil
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}
