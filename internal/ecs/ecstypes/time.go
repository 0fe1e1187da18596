package ecstypes

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
)

//go:generate sh -c "go run ../../../tools/shapegen -model $(python3 -c 'import botocore,os;print(os.path.dirname(botocore.__file__))')/data/ecs/2014-11-13/service-2.json.gz -pkg ecstypes > types.go"

// Time is a JSON 1.1 timestamp: epoch seconds as a number, fractions allowed.
type Time struct{ time.Time }

// At returns a *Time for t, the form the generated shapes take.
func At(t time.Time) *Time { return &Time{t} }

func (t Time) MarshalJSON() ([]byte, error) {
	ms := t.UnixMilli()
	return []byte(strconv.FormatFloat(float64(ms)/1000, 'f', -1, 64)), nil
}

func (t *Time) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if p, err := time.Parse(time.RFC3339Nano, s); err == nil {
			t.Time = p
			return nil
		}
		b = []byte(s)
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("invalid timestamp %s", b)
	}
	sec, frac := math.Modf(f)
	t.Time = time.Unix(int64(sec), int64(frac*1e9))
	return nil
}

// String and friends build pointers for the generated shapes.
func String(s string) *string { return &s }
func Int32(i int32) *int32    { return &i }
func Int64(i int64) *int64    { return &i }
func Bool(b bool) *bool       { return &b }

// Deref returns *p, or the zero value for nil.
func Deref[T any](p *T) T {
	var z T
	if p == nil {
		return z
	}
	return *p
}
