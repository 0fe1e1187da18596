package efs

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/iam"
	"github.com/gantry-dev/gantry/internal/state"
)

var (
	reFSID    = regexp.MustCompile(`^(arn:aws[-a-z]*:elasticfilesystem:[0-9a-z-:]+:file-system/fs-[0-9a-f]{8,40}|fs-[0-9a-f]{8,40})$`)
	reAPID    = regexp.MustCompile(`^(arn:aws[-a-z]*:elasticfilesystem:[0-9a-z-:]+:access-point/fsap-[0-9a-f]{8,40}|fsap-[0-9a-f]{8,40})$`)
	reMTID    = regexp.MustCompile(`^fsmt-[0-9a-f]{8,40}$`)
	reTagKey  = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]{1,128}$`)
	reTagVal  = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]{0,256}$`)
	rePerms   = regexp.MustCompile(`^[0-7]{3,4}$`)
	reAPPath  = regexp.MustCompile(`^(/|(/[^$#<>;` + "`" + `|&?{}^*/\n]+){1,4})$`)
	rePrivate = regexp.MustCompile(`(?i)^aws:`)
)

func checkFSID(id string) error {
	if id == "" {
		return badRequest("FileSystemId is required.")
	}
	if !reFSID.MatchString(id) {
		return badRequest("Invalid file system id '%s'.", id)
	}
	return nil
}

func checkTags(tags []Tag) error {
	if len(tags) > 50 {
		return badRequest("A resource can have at most 50 tags.")
	}
	seen := map[string]bool{}
	for _, t := range tags {
		switch {
		case !reTagKey.MatchString(t.Key):
			return badRequest("Invalid tag key '%s'.", t.Key)
		case rePrivate.MatchString(t.Key):
			return badRequest("Tag keys starting with 'aws:' are reserved for AWS use.")
		case !reTagVal.MatchString(t.Value):
			return badRequest("Invalid value for tag '%s'.", t.Key)
		case seen[t.Key]:
			return badRequest("Duplicate tag key '%s'.", t.Key)
		}
		seen[t.Key] = true
	}
	return nil
}

// mergeTags sets tags over old, key by key.
func mergeTags(old, tags []Tag) []Tag {
	out := append([]Tag(nil), old...)
	for _, t := range tags {
		found := false
		for i := range out {
			if out[i].Key == t.Key {
				out[i].Value, found = t.Value, true
			}
		}
		if !found {
			out = append(out, t)
		}
	}
	return out
}

type createFileSystemIn struct {
	CreationToken                string
	PerformanceMode              string
	Encrypted                    *bool
	KmsKeyId                     string
	ThroughputMode               string
	ProvisionedThroughputInMibps *float64
	AvailabilityZoneName         string
	Backup                       *bool
	Tags                         []Tag
}

func (s *Service) createFileSystem(c *call) (any, int, error) {
	var in createFileSystemIn
	if err := c.decode(&in); err != nil {
		return nil, 0, err
	}
	switch {
	case in.CreationToken == "":
		return nil, 0, badRequest("CreationToken is required.")
	case len(in.CreationToken) > 64:
		return nil, 0, badRequest("CreationToken must be at most 64 characters long.")
	}
	if in.PerformanceMode == "" {
		in.PerformanceMode = "generalPurpose"
	}
	if in.PerformanceMode != "generalPurpose" && in.PerformanceMode != "maxIO" {
		return nil, 0, badRequest("Invalid PerformanceMode '%s': use generalPurpose or maxIO.", in.PerformanceMode)
	}
	if in.ThroughputMode == "" {
		in.ThroughputMode = "bursting"
	}
	switch in.ThroughputMode {
	case "bursting", "elastic":
		if in.ProvisionedThroughputInMibps != nil {
			return nil, 0, badRequest("ProvisionedThroughputInMibps can be set only with ThroughputMode provisioned.")
		}
	case "provisioned":
		if in.ProvisionedThroughputInMibps == nil || *in.ProvisionedThroughputInMibps < 1 {
			return nil, 0, badRequest("ThroughputMode provisioned needs ProvisionedThroughputInMibps of at least 1.")
		}
	default:
		return nil, 0, badRequest("Invalid ThroughputMode '%s': use bursting, provisioned or elastic.", in.ThroughputMode)
	}
	if in.PerformanceMode == "maxIO" && in.ThroughputMode == "elastic" {
		return nil, 0, badRequest("Performance mode maxIO is not supported with throughput mode elastic.")
	}
	encrypted := in.Encrypted != nil && *in.Encrypted
	if in.KmsKeyId != "" && !encrypted {
		return nil, 0, badRequest("KmsKeyId can be set only for an encrypted file system.")
	}
	if err := checkTags(in.Tags); err != nil {
		return nil, 0, err
	}
	fsys := &FileSystem{
		ID:              newID("fs-"),
		OwnerID:         c.account,
		CreationToken:   in.CreationToken,
		CreationTime:    s.now().UTC(),
		PerformanceMode: in.PerformanceMode,
		ThroughputMode:  in.ThroughputMode,
		ProvisionedMiBs: in.ProvisionedThroughputInMibps,
		Encrypted:       encrypted,
		AZName:          in.AvailabilityZoneName,
		Backup:          in.Backup != nil && *in.Backup,
		Tags:            in.Tags,
	}
	fsys.ARN = "arn:aws:elasticfilesystem:" + c.region + ":" + c.account + ":file-system/" + fsys.ID
	if encrypted {
		fsys.KmsKeyID = in.KmsKeyId
		if fsys.KmsKeyID == "" {
			fsys.KmsKeyID = "arn:aws:kms:" + c.region + ":" + c.account + ":alias/aws/elasticfilesystem"
		}
	}
	// The tree exists before the record does, so a described file system
	// always has one; a leftover empty directory of a failed call is harmless.
	if s.DataDir != "" {
		if err := os.MkdirAll(Dir(s.DataDir, fsys.ID), 0o755); err != nil {
			return nil, 0, err
		}
		if err := os.Chmod(Dir(s.DataDir, fsys.ID), 0o755); err != nil {
			return nil, 0, err
		}
	}
	var existing *FileSystem
	err := s.Store.Update(c.ctx, func(tx state.Tx) error {
		existing = nil
		all, err := state.List[FileSystem](tx, KindFileSystem, scope(c.account, c.region))
		if err != nil {
			return err
		}
		for i := range all {
			if all[i].CreationToken == in.CreationToken {
				existing = &all[i]
				return nil
			}
		}
		return tx.Put(KindFileSystem, scope(c.account, c.region)+fsys.ID, fsys)
	})
	if err != nil {
		s.removeTree(fsys.ID)
		return nil, 0, err
	}
	if existing != nil {
		s.removeTree(fsys.ID)
		e := errorf("FileSystemAlreadyExists", "File system '%s' already exists with creation token '%s'", existing.ID, in.CreationToken)
		e.Extra = map[string]string{"FileSystemId": existing.ID}
		return nil, 0, e
	}
	out := s.describe(fsys, 0)
	out["LifeCycleState"] = "creating"
	return out, 201, nil
}

// describe is a FileSystemDescription.
func (s *Service) describe(f *FileSystem, mountTargets int) map[string]any {
	var size int64
	if s.DataDir != "" {
		filepath.WalkDir(Dir(s.DataDir, f.ID), func(_ string, d fs.DirEntry, err error) error {
			if err == nil {
				if info, err := d.Info(); err == nil {
					size += info.Size()
				}
			}
			return nil
		})
	}
	tags := f.Tags
	if tags == nil {
		tags = []Tag{}
	}
	out := map[string]any{
		"OwnerId":              f.OwnerID,
		"CreationToken":        f.CreationToken,
		"FileSystemId":         f.ID,
		"FileSystemArn":        f.ARN,
		"CreationTime":         epoch(f.CreationTime),
		"LifeCycleState":       "available",
		"NumberOfMountTargets": mountTargets,
		"SizeInBytes":          map[string]any{"Value": size, "Timestamp": epoch(s.now()), "ValueInStandard": size, "ValueInIA": 0, "ValueInArchive": 0},
		"PerformanceMode":      f.PerformanceMode,
		"Encrypted":            f.Encrypted,
		"ThroughputMode":       f.ThroughputMode,
		"Tags":                 tags,
		"FileSystemProtection": map[string]any{"ReplicationOverwriteProtection": "ENABLED"},
	}
	for _, t := range f.Tags {
		if t.Key == "Name" {
			out["Name"] = t.Value
		}
	}
	if f.KmsKeyID != "" {
		out["KmsKeyId"] = f.KmsKeyID
	}
	if f.ProvisionedMiBs != nil {
		out["ProvisionedThroughputInMibps"] = *f.ProvisionedMiBs
	}
	if f.AZName != "" {
		out["AvailabilityZoneName"] = f.AZName
	}
	return out
}

// pageArgs reads a page size and the position to start after.
func pageArgs(c *call, sizeName, markerName string) (int, string, error) {
	limit := 100
	if v := c.query.Get(sizeName); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return 0, "", badRequest("%s must be a positive integer.", sizeName)
		}
		limit = min(n, 100)
	}
	marker := c.query.Get(markerName)
	if _, ok := c.query[markerName]; ok && marker == "" {
		return 0, "", badRequest("%s must not be empty.", markerName)
	}
	return limit, marker, nil
}

// page returns the items after marker (ids in order), at most limit, and
// the marker of the next page.
func page[T any](items []T, id func(T) string, marker string, limit int) ([]T, string, error) {
	start := 0
	if marker != "" {
		start = -1
		for i, it := range items {
			if id(it) > marker {
				start = i
				break
			}
		}
		if start < 0 {
			start = len(items)
		}
		// Markers are ids; one that never was is a bad request.
		if !strings.Contains(marker, "-") {
			return nil, "", badRequest("Invalid marker '%s'.", marker)
		}
	}
	items = items[start:]
	if len(items) > limit {
		return items[:limit], id(items[limit-1]), nil
	}
	return items, "", nil
}

func (s *Service) describeFileSystems(c *call) (any, int, error) {
	limit, marker, err := pageArgs(c, "MaxItems", "Marker")
	if err != nil {
		return nil, 0, err
	}
	id, token := c.query.Get("FileSystemId"), c.query.Get("CreationToken")
	if id != "" && token != "" {
		return nil, 0, badRequest("Specify FileSystemId or CreationToken, not both.")
	}
	if id != "" {
		if err := checkFSID(id); err != nil {
			return nil, 0, err
		}
	}
	var list []FileSystem
	counts := map[string]int{}
	err = s.Store.View(c.ctx, func(tx state.Tx) error {
		all, err := state.List[FileSystem](tx, KindFileSystem, scope(c.account, c.region))
		if err != nil {
			return err
		}
		list = list[:0]
		for _, f := range all {
			if (id == "" || f.ID == bareID(id)) && (token == "" || f.CreationToken == token) {
				list = append(list, f)
			}
		}
		mts, err := state.List[MountTarget](tx, KindMountTarget, scope(c.account, c.region))
		for _, mt := range mts {
			counts[mt.FileSystemID]++
		}
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	if id != "" && len(list) == 0 {
		return nil, 0, fsNotFound(bareID(id))
	}
	pg, next, err := page(list, func(f FileSystem) string { return f.ID }, marker, limit)
	if err != nil {
		return nil, 0, err
	}
	out := map[string]any{"FileSystems": []any{}}
	descs := []any{}
	for i := range pg {
		descs = append(descs, s.describe(&pg[i], counts[pg[i].ID]))
	}
	out["FileSystems"] = descs
	if marker != "" {
		out["Marker"] = marker
	}
	if next != "" {
		out["NextMarker"] = next
	}
	return out, 200, nil
}

func (s *Service) deleteFileSystem(c *call) (any, int, error) {
	id := c.params[0]
	if err := checkFSID(id); err != nil {
		return nil, 0, err
	}
	id = bareID(id)
	err := s.Store.Update(c.ctx, func(tx state.Tx) error {
		f, err := LookupFileSystem(tx, c.account, c.region, id)
		if err != nil {
			return err
		}
		if f == nil {
			return fsNotFound(id)
		}
		mts, err := MountTargets(tx, c.account, c.region, id)
		if err != nil {
			return err
		}
		if len(mts) > 0 {
			return errorf("FileSystemInUse", "File system '%s' has mount targets; delete them first.", id)
		}
		aps, err := state.List[AccessPoint](tx, KindAccessPoint, scope(c.account, c.region))
		if err != nil {
			return err
		}
		for _, ap := range aps {
			if ap.FileSystemID == id {
				if _, err := tx.Delete(KindAccessPoint, scope(c.account, c.region)+ap.ID); err != nil {
					return err
				}
			}
		}
		_, err = tx.Delete(KindFileSystem, scope(c.account, c.region)+id)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	s.removeTree(id)
	return nil, 204, nil
}

// updateFS runs fn on file system params[0] and stores the result.
func (s *Service) updateFS(c *call, fn func(f *FileSystem) error) (*FileSystem, error) {
	id := c.params[0]
	if err := checkFSID(id); err != nil {
		return nil, err
	}
	id = bareID(id)
	var out *FileSystem
	err := s.Store.Update(c.ctx, func(tx state.Tx) error {
		f, err := LookupFileSystem(tx, c.account, c.region, id)
		if err != nil {
			return err
		}
		if f == nil {
			return fsNotFound(id)
		}
		if err := fn(f); err != nil {
			return err
		}
		out = f
		return tx.Put(KindFileSystem, scope(c.account, c.region)+id, f)
	})
	return out, err
}

func (s *Service) putPolicy(c *call) (any, int, error) {
	var in struct {
		Policy                         string
		BypassPolicyLockoutSafetyCheck bool
	}
	if err := c.decode(&in); err != nil {
		return nil, 0, err
	}
	if in.Policy == "" {
		return nil, 0, badRequest("Policy is required.")
	}
	if len(in.Policy) > 20000 {
		return nil, 0, errorf("InvalidPolicyException", "Policy must be at most 20,000 characters.")
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(in.Policy), &doc); err != nil || doc["Statement"] == nil {
		return nil, 0, errorf("InvalidPolicyException", "Policy is not a valid JSON policy document with a Statement.")
	}
	// Checked as it will be evaluated at mount time (DecideClientAccess):
	// a policy stored here must never fail there.
	if _, err := iam.ParseResourcePolicy(in.Policy); err != nil {
		msg := err.Error()
		if ae, ok := err.(*awsapi.Error); ok {
			msg = ae.Message
		}
		return nil, 0, errorf("InvalidPolicyException", "%s", msg)
	}
	f, err := s.updateFS(c, func(f *FileSystem) error { f.Policy = in.Policy; return nil })
	if err != nil {
		return nil, 0, err
	}
	return map[string]any{"FileSystemId": f.ID, "Policy": f.Policy}, 200, nil
}

func (s *Service) describePolicy(c *call) (any, int, error) {
	f, err := s.updateFS(c, func(*FileSystem) error { return nil })
	if err != nil {
		return nil, 0, err
	}
	if f.Policy == "" {
		return nil, 0, errorf("PolicyNotFound", "File system '%s' has no policy.", f.ID)
	}
	return map[string]any{"FileSystemId": f.ID, "Policy": f.Policy}, 200, nil
}

func (s *Service) deletePolicy(c *call) (any, int, error) {
	if _, err := s.updateFS(c, func(f *FileSystem) error { f.Policy = ""; return nil }); err != nil {
		return nil, 0, err
	}
	return nil, 200, nil
}
