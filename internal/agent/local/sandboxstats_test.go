package local

import (
	"encoding/json"
	"testing"

	"github.com/gantry-dev/gantry/internal/agent"
)

// A sample of `runsc events --stats` for a container of a two-container
// sandbox, as this host's runsc prints it.
const sentryEventSample = `{"type":"stats","id":"t-1","data":{"cpu":{"usage":{"total":61234567}},"memory":{"cache":0,"usage":{"limit":0,"usage":44040192,"failcnt":0},"swap":{"limit":0,"failcnt":0},"kernel":{"limit":0,"failcnt":0},"kernelTCP":{"limit":0,"failcnt":0}},"pids":{"current":3},"network_interfaces":[{"Name":"lo","RxBytes":10,"RxPackets":1,"RxErrors":0,"RxDropped":0,"TxBytes":10,"TxPackets":1,"TxErrors":0,"TxDropped":0},{"Name":"eth0","RxBytes":2048,"RxPackets":12,"RxErrors":0,"RxDropped":1,"TxBytes":1024,"TxPackets":8,"TxErrors":0,"TxDropped":0}]}}`

func TestParseSentryEvent(t *testing.T) {
	s, err := parseSentryEvent([]byte(sentryEventSample), "t-1")
	if err != nil {
		t.Fatal(err)
	}
	if s.ID != "t-1" || s.MemoryStats.Usage != 44040192 || s.CPUStats.CPUUsage.TotalUsage != 61234567 || s.PidsStats.Current != 3 {
		t.Errorf("stats %+v", s)
	}
	if _, ok := s.Networks["lo"]; ok || len(s.Networks) != 1 || s.Networks["eth0"].RxBytes != 2048 || s.Networks["eth0"].RxDropped != 1 {
		t.Errorf("networks %+v, want eth0 alone", s.Networks)
	}
	// Docker sends empty lists, not null, for what it has no entries of.
	b, _ := json.Marshal(s)
	var m map[string]map[string]any
	json.Unmarshal(b, &m)
	if v, ok := m["blkio_stats"]["io_service_bytes_recursive"].([]any); !ok || len(v) != 0 {
		t.Errorf("blkio_stats %v", m["blkio_stats"])
	}
	if _, err := parseSentryEvent([]byte(sentryEventSample), "t-2"); err == nil {
		t.Error("another container's event taken for t-2's")
	}
	if _, err := parseSentryEvent([]byte("ERROR: no such container"), "t-1"); err == nil {
		t.Error("runsc's error text parsed as stats")
	}
}

func FuzzParseSentryEvent(f *testing.F) {
	f.Add([]byte(sentryEventSample), "t-1")
	f.Add([]byte(`{"type":"stats","id":"x","data":{"network_interfaces":[null,{}]}}`), "x")
	f.Add([]byte(`{}`), "")
	f.Fuzz(func(t *testing.T, raw []byte, id string) {
		s, err := parseSentryEvent(raw, id)
		if err != nil {
			return
		}
		if s.ID != id {
			t.Errorf("stats of %q for %q", s.ID, id)
		}
		if _, ok := s.Networks["lo"]; ok {
			t.Error("loopback in networks")
		}
		if _, err := json.Marshal(s); err != nil {
			t.Error(err)
		}
	})
}

func TestContainerMemoryLimit(t *testing.T) {
	spec := agent.TaskSpec{MemoryMiB: 512, Containers: []agent.ContainerSpec{
		{Name: "own", MemoryMiB: 128}, {Name: "none"}, {Name: "above", MemoryMiB: 1024},
	}}
	for name, want := range map[string]uint64{"own": 128 << 20, "none": 512 << 20, "above": 512 << 20, "missing": 512 << 20} {
		if got := containerMemoryLimit(spec, name); got != want {
			t.Errorf("%s: limit %d MiB, want %d", name, got>>20, want>>20)
		}
	}
}
