package efs

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/state"
)

// Bad input gets EFS errors in EFS's format, never a 500 or a panic.
func TestBadInput(t *testing.T) {
	st, err := state.OpenSQLite(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := &Service{Store: st, DataDir: t.TempDir()}
	for _, c := range []struct{ method, path, body, code string }{
		{"POST", "/2015-02-01/file-systems", `{"CreationToken": 5}`, "BadRequest"},
		{"POST", "/2015-02-01/file-systems", `{`, "BadRequest"},
		{"POST", "/2015-02-01/file-systems", `{}`, "BadRequest"},
		{"POST", "/2015-02-01/mount-targets", `{"FileSystemId": "fs-0123456789abcdef0", "SubnetId": "subnet-1"}`, "FileSystemNotFound"},
		{"POST", "/2015-02-01/access-points", `{"ClientToken": "t", "FileSystemId": "fs-01234567", "PosixUser": {"Uid": -1, "Gid": 0}}`, "BadRequest"},
		{"POST", "/2015-02-01/access-points", `{"ClientToken": "t", "FileSystemId": "fs-01234567", "PosixUser": {}}`, "BadRequest"},
		{"DELETE", "/2015-02-01/file-systems/nope", ``, "BadRequest"},
		{"GET", "/2015-02-01/file-systems?MaxItems=0", ``, "BadRequest"},
		{"GET", "/2015-02-01/mount-targets", ``, "BadRequest"},
		{"GET", "/2015-02-01/resource-tags/fs-0123456789abcdef0?NextToken=x", ``, "FileSystemNotFound"},
		{"PATCH", "/2015-02-01/file-systems", ``, "UnknownOperationException"},
	} {
		r := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
		r = r.WithContext(awsapi.WithIdentity(context.Background(), &awsapi.Identity{Account: "000000000000", Region: "us-east-1"}))
		w := httptest.NewRecorder()
		s.ServeREST(w, r, []byte(c.body))
		if got := w.Header().Get("X-Amzn-ErrorType"); got != c.code || w.Code >= 500 || w.Code < 400 || !strings.Contains(w.Body.String(), `"ErrorCode":"`+c.code+`"`) {
			t.Errorf("%s %s %s: %d %s %s, want %s", c.method, c.path, c.body, w.Code, got, w.Body, c.code)
		}
	}
	_ = http.MethodGet
}
