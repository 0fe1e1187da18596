package logs

import (
	"context"
	"path/filepath"
	"testing"
)

func TestUpdateGroupClears(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "logs.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, sc := context.Background(), Scope{"1", "r"}
	if err := s.createGroup(ctx, sc, "g", "", "STANDARD", map[string]string{"a": "1", "b": "2"}); err != nil {
		t.Fatal(err)
	}
	d := int32(1)
	s.updateGroup(ctx, sc, "g", func(g *group) { g.Retention = &d })
	s.updateGroup(ctx, sc, "g", func(g *group) { g.Retention = nil; delete(g.Tags, "a") })
	g, err := s.group(ctx, s.read, sc, "g")
	if err != nil {
		t.Fatal(err)
	}
	if g.Retention != nil || len(g.Tags) != 1 {
		t.Errorf("retention %v tags %v", g.Retention, g.Tags)
	}
}
