// Package efs is Gantry's EFS-compatible file systems: the EFS API
// (rest-json under /2015-02-01/, signing name elasticfilesystem) over the
// state store, and, on this host, one directory tree per file system under
// DATA_DIR/efs/<fs-id>. Tasks mount them through efsVolumeConfiguration;
// the local agent bind-mounts the file system or an access point's root
// directory into their containers.
package efs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/state"
)

// SigningName is EFS's SigV4 service name; PathPrefix starts its paths.
const (
	SigningName = "elasticfilesystem"
	PathPrefix  = "/2015-02-01/"
)

// Document kinds, keyed account/region/id.
const (
	KindFileSystem  = "efs.filesystem"
	KindMountTarget = "efs.mounttarget"
	KindAccessPoint = "efs.accesspoint"
)

// Dir is where file system id keeps its files on a host whose data
// directory is dataDir. The local agent mounts from here.
func Dir(dataDir, id string) string { return filepath.Join(dataDir, "efs", id) }

// Tag is an EFS tag.
type Tag struct {
	Key   string `json:"Key"`
	Value string `json:"Value"`
}

// FileSystem is a stored file system.
type FileSystem struct {
	ID              string    `json:"id"`
	ARN             string    `json:"arn"`
	OwnerID         string    `json:"ownerId"`
	CreationToken   string    `json:"creationToken"`
	CreationTime    time.Time `json:"creationTime"`
	PerformanceMode string    `json:"performanceMode"`
	ThroughputMode  string    `json:"throughputMode"`
	ProvisionedMiBs *float64  `json:"provisionedMibps,omitempty"`
	Encrypted       bool      `json:"encrypted"`
	KmsKeyID        string    `json:"kmsKeyId,omitempty"`
	AZName          string    `json:"azName,omitempty"`
	Backup          bool      `json:"backup,omitempty"`
	Policy          string    `json:"policy,omitempty"`
	Tags            []Tag     `json:"tags,omitempty"`
}

// MountTarget is a stored mount target: the file system's address in one
// subnet (one availability zone) of a VPC.
type MountTarget struct {
	ID             string   `json:"id"`
	OwnerID        string   `json:"ownerId"`
	FileSystemID   string   `json:"fileSystemId"`
	SubnetID       string   `json:"subnetId"`
	VPCID          string   `json:"vpcId"`
	AZName         string   `json:"azName"`
	AZID           string   `json:"azId"`
	IPAddress      string   `json:"ipAddress"`
	ENIID          string   `json:"eniId"`
	SecurityGroups []string `json:"securityGroups"`
}

// PosixUser is the identity an access point imposes on file operations.
type PosixUser struct {
	Uid           *int64  `json:"Uid"`
	Gid           *int64  `json:"Gid"`
	SecondaryGids []int64 `json:"SecondaryGids,omitempty"`
}

// CreationInfo says how an access point's root directory is made.
type CreationInfo struct {
	OwnerUid    *int64 `json:"OwnerUid"`
	OwnerGid    *int64 `json:"OwnerGid"`
	Permissions string `json:"Permissions"`
}

// RootDirectory is the directory an access point exposes as its root.
type RootDirectory struct {
	Path         string        `json:"Path,omitempty"`
	CreationInfo *CreationInfo `json:"CreationInfo,omitempty"`
}

// AccessPoint is a stored access point.
type AccessPoint struct {
	ID            string         `json:"id"`
	ARN           string         `json:"arn"`
	OwnerID       string         `json:"ownerId"`
	FileSystemID  string         `json:"fileSystemId"`
	ClientToken   string         `json:"clientToken"`
	PosixUser     *PosixUser     `json:"posixUser,omitempty"`
	RootDirectory *RootDirectory `json:"rootDirectory,omitempty"`
	Tags          []Tag          `json:"tags,omitempty"`
}

// Root is the access point's root directory inside its file system.
func (ap *AccessPoint) Root() string {
	if ap.RootDirectory == nil || ap.RootDirectory.Path == "" {
		return "/"
	}
	return ap.RootDirectory.Path
}

func scope(account, region string) string { return account + "/" + region + "/" }

// LookupFileSystem returns the file system id (or its ARN), or nil.
func LookupFileSystem(tx state.Tx, account, region, id string) (*FileSystem, error) {
	var fs FileSystem
	ok, err := tx.Get(KindFileSystem, scope(account, region)+bareID(id), &fs)
	if err != nil || !ok {
		return nil, err
	}
	return &fs, nil
}

// LookupAccessPoint returns the access point id (or its ARN), or nil.
func LookupAccessPoint(tx state.Tx, account, region, id string) (*AccessPoint, error) {
	var ap AccessPoint
	ok, err := tx.Get(KindAccessPoint, scope(account, region)+bareID(id), &ap)
	if err != nil || !ok {
		return nil, err
	}
	return &ap, nil
}

// MountTargets returns the mount targets of file system fsID.
func MountTargets(tx state.Tx, account, region, fsID string) ([]MountTarget, error) {
	all, err := state.List[MountTarget](tx, KindMountTarget, scope(account, region))
	var out []MountTarget
	for _, mt := range all {
		if mt.FileSystemID == fsID {
			out = append(out, mt)
		}
	}
	return out, err
}

// bareID strips an ARN down to its resource id.
func bareID(id string) string {
	if strings.HasPrefix(id, "arn:") {
		if i := strings.LastIndex(id, "/"); i >= 0 {
			return id[i+1:]
		}
	}
	return id
}

// Service is the EFS API.
type Service struct {
	Store   state.Store
	DataDir string
	Log     *slog.Logger
	Now     func() time.Time
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Error is an EFS error: ErrorCode and Message in the body, the code in
// x-amzn-ErrorType, and the shape's extra members (FileSystemId, ...).
type Error struct {
	Code    string
	Message string
	Status  int
	Extra   map[string]string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// statuses are the HTTP statuses of EFS's error shapes.
var statuses = map[string]int{
	"BadRequest": 400, "ValidationException": 400, "SubnetNotFound": 400, "SecurityGroupNotFound": 400,
	"FileSystemNotFound": 404, "MountTargetNotFound": 404, "AccessPointNotFound": 404, "PolicyNotFound": 404,
	"FileSystemAlreadyExists": 409, "FileSystemInUse": 409, "MountTargetConflict": 409,
	"IncorrectFileSystemLifeCycleState": 409, "AccessPointAlreadyExists": 409, "IpAddressInUse": 409,
	"NoFreeAddressesInSubnet": 409, "InvalidPolicyException": 400, "SecurityGroupLimitExceeded": 400,
	"AccessPointLimitExceeded": 403, "FileSystemLimitExceeded": 403,
}

func errorf(code, format string, args ...any) *Error {
	st := statuses[code]
	if st == 0 {
		st = 400
	}
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Status: st}
}

func badRequest(format string, args ...any) *Error { return errorf("BadRequest", format, args...) }

func fsNotFound(id string) *Error {
	return errorf("FileSystemNotFound", "File system '%s' does not exist.", id)
}

// WriteError writes an awsapi error (SigV4 and the like) in EFS's format.
func (s *Service) WriteError(w http.ResponseWriter, e *awsapi.Error) {
	st := e.Status
	if st == 0 {
		st = 400
	}
	writeError(w, &Error{Code: e.Code, Message: e.Message, Status: st})
}

func writeError(w http.ResponseWriter, e *Error) {
	body := map[string]string{"ErrorCode": e.Code, "Message": e.Message}
	for k, v := range e.Extra {
		body[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Amzn-ErrorType", e.Code)
	w.WriteHeader(e.Status)
	b, _ := json.Marshal(body)
	w.Write(b)
}

// PathPrefix is where EFS's paths start.
func (s *Service) PathPrefix() string { return PathPrefix }

type route struct {
	method string
	path   []string // "*" matches one segment
	name   string
	fn     func(s *Service, c *call) (any, int, error)
}

var routes = []route{
	{"POST", []string{"file-systems"}, "CreateFileSystem", (*Service).createFileSystem},
	{"GET", []string{"file-systems"}, "DescribeFileSystems", (*Service).describeFileSystems},
	{"DELETE", []string{"file-systems", "*"}, "DeleteFileSystem", (*Service).deleteFileSystem},
	{"PUT", []string{"file-systems", "*", "policy"}, "PutFileSystemPolicy", (*Service).putPolicy},
	{"GET", []string{"file-systems", "*", "policy"}, "DescribeFileSystemPolicy", (*Service).describePolicy},
	{"DELETE", []string{"file-systems", "*", "policy"}, "DeleteFileSystemPolicy", (*Service).deletePolicy},
	{"POST", []string{"mount-targets"}, "CreateMountTarget", (*Service).createMountTarget},
	{"GET", []string{"mount-targets"}, "DescribeMountTargets", (*Service).describeMountTargets},
	{"DELETE", []string{"mount-targets", "*"}, "DeleteMountTarget", (*Service).deleteMountTarget},
	{"GET", []string{"mount-targets", "*", "security-groups"}, "DescribeMountTargetSecurityGroups", (*Service).describeMountTargetSecurityGroups},
	{"POST", []string{"access-points"}, "CreateAccessPoint", (*Service).createAccessPoint},
	{"GET", []string{"access-points"}, "DescribeAccessPoints", (*Service).describeAccessPoints},
	{"DELETE", []string{"access-points", "*"}, "DeleteAccessPoint", (*Service).deleteAccessPoint},
	{"POST", []string{"resource-tags", "*"}, "TagResource", (*Service).tagResource},
	{"DELETE", []string{"resource-tags", "*"}, "UntagResource", (*Service).untagResource},
	{"GET", []string{"resource-tags", "*"}, "ListTagsForResource", (*Service).listTags},
}

// call is one request: its path parameters, query, body and caller.
type call struct {
	ctx             context.Context
	account, region string
	params          []string
	query           url.Values
	body            []byte
}

func (c *call) decode(v any) error {
	if len(strings.TrimSpace(string(c.body))) == 0 {
		return nil
	}
	if err := json.Unmarshal(c.body, v); err != nil {
		return badRequest("Could not parse the request body: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	return nil
}

func match(r *http.Request) (*route, []string) {
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), PathPrefix)
	if !ok {
		return nil, nil
	}
	segs := strings.Split(strings.TrimSuffix(rest, "/"), "/")
	for i := range routes {
		rt := &routes[i]
		if rt.method != r.Method || len(rt.path) != len(segs) {
			continue
		}
		var params []string
		ok := true
		for j, p := range rt.path {
			seg, err := url.PathUnescape(segs[j])
			if err != nil {
				ok = false
				break
			}
			if p == "*" {
				params = append(params, seg)
			} else if p != seg {
				ok = false
				break
			}
		}
		if ok {
			return rt, params
		}
	}
	return nil, nil
}

// Operation names the operation r calls, or "".
func (s *Service) Operation(r *http.Request) string {
	if rt, _ := match(r); rt != nil {
		return rt.name
	}
	return ""
}

// ServeREST answers one verified request.
func (s *Service) ServeREST(w http.ResponseWriter, r *http.Request, body []byte) {
	rt, params := match(r)
	if rt == nil {
		writeError(w, &Error{Code: "UnknownOperationException", Message: fmt.Sprintf("No EFS operation answers %s %s.", r.Method, r.URL.Path), Status: 404})
		return
	}
	id := awsapi.IdentityFrom(r.Context())
	c := &call{ctx: r.Context(), account: id.Account, region: id.Region, params: params, query: r.URL.Query(), body: body}
	out, status, err := s.safe(rt, c)
	if err != nil {
		var e *Error
		var ae *awsapi.Error
		switch {
		case errors.As(err, &e):
		case errors.As(err, &ae):
			e = &Error{Code: ae.Code, Message: ae.Message, Status: ae.Status}
		default:
			if s.Log != nil {
				s.Log.Error("efs operation failed", "op", rt.name, "err", err)
			}
			e = &Error{Code: "InternalServerError", Message: err.Error(), Status: 500}
		}
		writeError(w, e)
		return
	}
	if out == nil {
		w.WriteHeader(status)
		return
	}
	b, err := json.Marshal(out)
	if err != nil {
		writeError(w, &Error{Code: "InternalServerError", Message: err.Error(), Status: 500})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

func (s *Service) safe(rt *route, c *call) (out any, status int, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("internal error: %v", p)
		}
	}()
	return rt.fn(s, c)
}

func newID(prefix string) string {
	var b [9]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])[:17]
}

// epoch is how rest-json writes timestamps: seconds since 1970.
func epoch(t time.Time) float64 { return float64(t.UnixMilli()) / 1000 }

// removeTree deletes a file system's directory after its records are gone.
func (s *Service) removeTree(id string) {
	if s.DataDir == "" {
		return
	}
	if err := os.RemoveAll(Dir(s.DataDir, id)); err != nil && s.Log != nil {
		s.Log.Warn("efs: remove file system data", "fileSystem", id, "err", err)
	}
}
