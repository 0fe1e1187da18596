// Package netw gives each task its own network namespace with one
// interface, eth0, holding a private address from its subnet: Gantry's
// stand-in for a Fargate task's ENI. Every VPC is a Linux bridge on the host
// (the bridge holds each subnet's gateway address and masquerades traffic
// leaving the host); addresses come from CNI's host-local IPAM.
//
// Subnets are not isolated from the host's routing: two servers on one
// host with overlapping subnets (two default VPCs, say) each get a bridge,
// but the host reaches only one of them by address.
//
// All state lives on disk (a record per task, the IPAM leases, CNI's result
// cache), so a restarted agent can tear down what an earlier one set up.
package netw

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/vishvananda/netlink"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"

	"github.com/containerd/containerd/pkg/netns"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	cniip "github.com/containernetworking/plugins/pkg/ip"
	cnins "github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/utils"

	"github.com/gantry-dev/gantry/internal/agent"
)

// PluginDirs are searched for CNI plugin binaries: Debian's package, then
// the upstream release's usual place.
var PluginDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}

const ifName = "eth0"

// Manager sets up and tears down task networks for one data directory.
type Manager struct {
	dataDir  string
	stateDir string // a JSON record per task
	ipamDir  string // host-local's leases, a directory per network
	nsDir    string // bind mounts keeping the namespaces alive
	cni      *libcni.CNIConfig

	// mu is held only for short steps on the set of records, never
	// around CNI, so a task claiming a ready pool entry never waits for
	// another task's setup, teardown or a refill (each runs the plugins for
	// tens of milliseconds). What it must keep whole is a bridge's life:
	// dropIdleBridge looks for records naming the bridge and deletes it
	// under mu, and a record naming a bridge is only created under mu
	// (create) or while another record naming the same bridge exists (a
	// claim's), so a setup that goes on to use the bridge was either seen
	// by dropIdleBridge or comes after it and makes the bridge again
	// (ensureGateway, before CNI runs). mu also guards the pool's maps and
	// the namespace directory, which teardown removes when empty.
	mu sync.Mutex
	// cniMu runs the CNI plugins one at a time (it is never held with
	// mu): side by side, ten setups on this 2-core host finished 50% later
	// than one after another (BenchmarkNetwSetupBurst; the bridge plugin's
	// iptables runs contend). Claims run no plugin and never take it.
	cniMu sync.Mutex
	// tasks serializes the calls for one task (Setup, Teardown, Get,
	// Has): its record and CNI's cache entry are per task. Guarded by mu.
	tasks map[string]*taskLock

	pool *pool // nil until StartPool
	// holds counts the task starts holding refills back (HoldRefills);
	// unheld is closed when it falls to 0. Guarded by mu.
	holds  int
	unheld chan struct{}
}

type taskLock struct {
	mu    sync.Mutex
	users int // holders and waiters; the entry goes with the last
}

// lockTask locks the task's calls and returns the unlock.
func (m *Manager) lockTask(taskID string) func() {
	m.mu.Lock()
	l := m.tasks[taskID]
	if l == nil {
		l = &taskLock{}
		m.tasks[taskID] = l
	}
	l.users++
	m.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		m.mu.Lock()
		if l.users--; l.users == 0 {
			delete(m.tasks, taskID)
		}
		m.mu.Unlock()
	}
}

// Attachment is a task's network as set up.
type Attachment struct {
	NetNSPath string
	IPv4      string
	MAC       string
	Gateway   string
	// PrefixLength is the subnet's (e.g. 20 for 172.31.0.0/20).
	PrefixLength int
}

// record is what Teardown needs, written before anything is created.
type record struct {
	TaskID  string          `json:"taskId"`
	NetNS   string          `json:"netns"`
	ConfL   json.RawMessage `json:"conflist"`
	MAC     string          `json:"mac"`
	Gateway string          `json:"gateway"`
	IPv4    string          `json:"ipv4,omitempty"` // CIDR, once CNI gave it
	// CNIID is the container id CNI knows the attachment by, when it is
	// not TaskID: a namespace made for the pool keeps its pool name.
	CNIID string `json:"cniId,omitempty"`
	// Pool is set on a pool entry not yet claimed: its subnet's key, and
	// the subnet, for making more like it after a restart.
	Pool     string             `json:"pool,omitempty"`
	PoolSpec *agent.NetworkSpec `json:"poolSpec,omitempty"`
}

func (r *record) cniID() string {
	if r.CNIID != "" {
		return r.CNIID
	}
	return r.TaskID
}

// New returns the manager for dataDir; its state lives in DataDir/agent.
func New(dataDir string) (*Manager, error) {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256([]byte(abs))
	m := &Manager{
		dataDir:  abs,
		stateDir: filepath.Join(abs, "agent", "netw"),
		ipamDir:  filepath.Join(abs, "agent", "ipam"),
		// Under /run: a namespace does not outlive a reboot, and neither
		// should the file that names it. Keyed by data directory so two
		// servers on one host do not see each other's.
		nsDir: filepath.Join("/run/gantry/netns", hex.EncodeToString(h[:6])),
		// The plugin runner is given, not left to libcni to make on first
		// use: setups run concurrently, and that lazy write would race.
		cni: libcni.NewCNIConfigWithCacheDir(PluginDirs, filepath.Join(abs, "agent", "cni-cache"),
			&invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}}),
		tasks: map[string]*taskLock{},
	}
	for _, d := range []string{m.stateDir, m.ipamDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Setup creates the task's namespace and attaches it to its subnet.
func (m *Manager) Setup(ctx context.Context, taskID string, spec agent.NetworkSpec) (*Attachment, error) {
	if err := validID(taskID); err != nil {
		return nil, err
	}
	prefix, gw, err := subnet(spec)
	if err != nil {
		return nil, err
	}
	mac := spec.MACAddress
	if mac == "" {
		mac = MACFor(taskID)
	}
	if _, err := net.ParseMAC(mac); err != nil {
		return nil, fmt.Errorf("task %s: MAC address %q: %w", taskID, mac, err)
	}
	defer m.lockTask(taskID)()
	if rec, err := m.load(taskID); err == nil && rec != nil {
		return nil, fmt.Errorf("task %s already has a network (namespace %s); tear it down first", taskID, rec.NetNS)
	}
	conf := m.conflist(spec, prefix, gw)
	key := poolKey(conf)
	defer m.refill(key, spec)
	if att, err := m.claim(key, taskID, mac, prefix.Bits()); att != nil {
		return att, nil
	} else if err != nil {
		// The entry is gone; a namespace made now does as well.
		m.poolLog().Warn("network pool: claim failed; setting up afresh", "task", taskID, "err", err)
	}
	rec := &record{TaskID: taskID, ConfL: conf, MAC: mac, Gateway: gw.String()}
	if err := m.create(rec); err != nil {
		return nil, err
	}
	att, err := m.attach(ctx, rec, prefix)
	if err != nil {
		if terr := m.teardown(context.WithoutCancel(ctx), rec); terr != nil {
			err = fmt.Errorf("%w (and cleaning up: %v)", err, terr)
		}
		return nil, fmt.Errorf("task %s: network setup: %w", taskID, err)
	}
	return att, nil
}

// create makes the record's namespace and stores the record, before CNI
// runs: a crash mid-ADD still leaves Teardown what it needs to release the
// address and the namespace. Under mu: a new record may name a bridge
// dropIdleBridge is deciding about, and the namespace directory may be
// going.
func (m *Manager) create(rec *record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := os.MkdirAll(m.nsDir, 0o755); err != nil {
		return err
	}
	ns, err := netns.NewNetNS(m.nsDir)
	if err != nil {
		return fmt.Errorf("create network namespace: %w", err)
	}
	rec.NetNS = ns.GetPath()
	if err := m.save(rec); err != nil {
		ns.Remove()
		return err
	}
	return nil
}

func (m *Manager) attach(ctx context.Context, rec *record, prefix netip.Prefix) (*Attachment, error) {
	cl, err := libcni.ConfListFromBytes(rec.ConfL)
	if err != nil {
		return nil, err
	}
	if err := ensureGateway(bridgeOf(rec.ConfL), rec.Gateway, prefix); err != nil {
		return nil, err
	}
	m.cniMu.Lock()
	res, err := m.cni.AddNetworkList(ctx, cl, &libcni.RuntimeConf{ContainerID: rec.cniID(), NetNS: rec.NetNS, IfName: ifName})
	m.cniMu.Unlock()
	if err != nil {
		return nil, err
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return nil, err
	}
	for _, ipc := range r.IPs {
		if ipc.Address.IP.To4() == nil {
			continue
		}
		if ipc.Interface != nil && (*ipc.Interface >= len(r.Interfaces) || r.Interfaces[*ipc.Interface].Sandbox == "") {
			continue
		}
		rec.IPv4 = ipc.Address.String()
		if err := m.save(rec); err != nil {
			return nil, err
		}
		if err := inNamespace(rec.NetNS, rec.MAC); err != nil {
			return nil, err
		}
		return &Attachment{
			NetNSPath:    rec.NetNS,
			IPv4:         ipc.Address.IP.String(),
			MAC:          rec.MAC,
			Gateway:      rec.Gateway,
			PrefixLength: prefix.Bits(),
		}, nil
	}
	return nil, fmt.Errorf("CNI gave no IPv4 address for %s: %s", ifName, res)
}

// Get returns the attachment of a task set up earlier (by this process or
// an earlier one), or nil if the task has none.
func (m *Manager) Get(taskID string) (*Attachment, error) {
	if err := validID(taskID); err != nil {
		return nil, err
	}
	defer m.lockTask(taskID)()
	rec, err := m.load(taskID)
	if err != nil || rec == nil || rec.IPv4 == "" {
		return nil, err
	}
	p, err := netip.ParsePrefix(rec.IPv4)
	if err != nil {
		return nil, err
	}
	return &Attachment{NetNSPath: rec.NetNS, IPv4: p.Addr().String(), MAC: rec.MAC, Gateway: rec.Gateway, PrefixLength: p.Bits()}, nil
}

// Transfer hands the network set up for one owner to another (a sandbox
// booted ahead of tasks in it, to the task that takes it over), as it is:
// the same namespace, address and MAC. CNI keeps knowing the attachment by
// its first owner's id (CNIID), as for a claimed pool entry.
func (m *Manager) Transfer(from, to string) (*Attachment, error) {
	if err := validID(to); err != nil {
		return nil, err
	}
	if from == to {
		return nil, fmt.Errorf("task %s already has its network", to)
	}
	defer m.lockTask(from)()
	defer m.lockTask(to)()
	rec, err := m.load(from)
	if err != nil {
		return nil, err
	}
	if rec == nil || rec.IPv4 == "" {
		return nil, fmt.Errorf("%s has no network to hand over", from)
	}
	if have, err := m.load(to); err != nil {
		return nil, err
	} else if have != nil {
		return nil, fmt.Errorf("task %s already has a network (namespace %s)", to, have.NetNS)
	}
	taken := *rec
	taken.TaskID, taken.CNIID = to, rec.cniID()
	if err := m.save(&taken); err != nil {
		return nil, err
	}
	if err := os.Remove(m.recordPath(from)); err != nil {
		return nil, err
	}
	p, err := netip.ParsePrefix(taken.IPv4)
	if err != nil {
		return nil, err
	}
	return &Attachment{NetNSPath: taken.NetNS, IPv4: p.Addr().String(), MAC: taken.MAC, Gateway: taken.Gateway, PrefixLength: p.Bits()}, nil
}

// Has reports whether the manager holds any record of the task, even one of
// a Setup that never finished: only then is there anything to tear down
// before setting the task up again.
func (m *Manager) Has(taskID string) (bool, error) {
	if err := validID(taskID); err != nil {
		return false, err
	}
	defer m.lockTask(taskID)()
	rec, err := m.load(taskID)
	return rec != nil, err
}

// Teardown releases the task's address and removes its namespace. It is
// idempotent, and works from the task's record on disk, so after a restart
// too; without a record (a crash before it was written) it uses spec.
func (m *Manager) Teardown(ctx context.Context, taskID string, spec agent.NetworkSpec) error {
	if err := validID(taskID); err != nil {
		return err
	}
	defer m.lockTask(taskID)()
	rec, err := m.load(taskID)
	if err != nil {
		return err
	}
	if rec == nil {
		if spec.SubnetCIDR == "" {
			return nil
		}
		prefix, gw, err := subnet(spec)
		if err != nil {
			return err
		}
		// Releasing an address never leased is a no-op for host-local.
		rec = &record{TaskID: taskID, ConfL: m.conflist(spec, prefix, gw)}
	}
	return m.teardown(ctx, rec)
}

// TeardownAll tears down every task network this manager still records:
// for cleaning up after a host whose agent is gone.
func (m *Manager) TeardownAll(ctx context.Context) error {
	ents, err := os.ReadDir(m.stateDir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		id := strings.TrimSuffix(e.Name(), ".json")
		errs = append(errs, m.Teardown(ctx, id, agent.NetworkSpec{}))
	}
	return errors.Join(errs...)
}

// teardown undoes rec's attachment and namespace, then removes its record;
// mu must not be held (CNI runs), the caller owns rec (its task's lock, or
// a pool entry taken out of the pool).
func (m *Manager) teardown(ctx context.Context, rec *record) error {
	var errs []error
	// A namespace that is already gone (a reboot) is passed as "": the
	// plugins then only release what they hold on the host side.
	nsPath := rec.NetNS
	if nsPath != "" {
		if _, err := os.Stat(nsPath); err != nil {
			nsPath = ""
		}
	}
	m.cniMu.Lock()
	if cl, err := libcni.ConfListFromBytes(rec.ConfL); err != nil {
		errs = append(errs, err)
	} else if err := m.cni.DelNetworkList(ctx, cl, &libcni.RuntimeConf{ContainerID: rec.cniID(), NetNS: nsPath, IfName: ifName}); err != nil {
		errs = append(errs, fmt.Errorf("CNI DEL: %w", err))
	} else if nsPath == "" && rec.IPv4 != "" {
		// Without the namespace the bridge plugin cannot learn the
		// task's address, so it leaves its masquerade rules behind.
		if err := unmasquerade(cl.Name, rec); err != nil {
			errs = append(errs, err)
		}
	}
	m.cniMu.Unlock()
	if rec.NetNS != "" {
		if err := netns.LoadNetNS(rec.NetNS).Remove(); err != nil {
			errs = append(errs, fmt.Errorf("remove network namespace: %w", err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("task %s: network teardown: %w", rec.TaskID, errors.Join(errs...))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := os.Remove(m.recordPath(rec.TaskID)); err != nil && !os.IsNotExist(err) {
		return err
	}
	os.Remove(m.nsDir) // only succeeds once the last namespace is gone
	return m.dropIdleBridge(rec)
}

// dropIdleBridge deletes the task's bridge once no task of this manager uses
// it (no record names it; mu is held, see Manager.mu). A bridge left behind keeps its gateway address and route on the host,
// and a later server with the same subnet would then find its tasks
// unreachable behind the stale route.
func (m *Manager) dropIdleBridge(gone *record) error {
	name := bridgeOf(gone.ConfL)
	if name == "" {
		return nil
	}
	ents, err := os.ReadDir(m.stateDir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		rec, err := m.load(strings.TrimSuffix(e.Name(), ".json"))
		if err == nil && rec != nil && bridgeOf(rec.ConfL) == name {
			return nil
		}
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil // already gone
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("remove idle bridge %s: %w", name, err)
	}
	return nil
}

func bridgeOf(conflist []byte) string {
	var cl struct {
		Plugins []struct {
			Type   string `json:"type"`
			Bridge string `json:"bridge"`
		} `json:"plugins"`
	}
	json.Unmarshal(conflist, &cl)
	for _, p := range cl.Plugins {
		if p.Type == "bridge" {
			return p.Bridge
		}
	}
	return ""
}

func unmasquerade(netName string, rec *record) error {
	ip, ipn, err := net.ParseCIDR(rec.IPv4)
	if err != nil {
		return err
	}
	ipn.IP = ip
	if err := cniip.TeardownIPMasq(ipn, utils.FormatChainName(netName, rec.cniID()), utils.FormatComment(netName, rec.cniID())); err != nil {
		return fmt.Errorf("remove masquerade rules for %s: %w", rec.IPv4, err)
	}
	return nil
}

// Leftovers lists the namespaces, address leases and task records this
// manager still holds: empty once every task is torn down. Ready pool
// entries are not leftovers (Pooled lists them); a broken one is.
func (m *Manager) Leftovers() ([]string, error) {
	pooled, err := m.pooledRecords()
	if err != nil {
		return nil, err
	}
	skipNS, skipOwner := map[string]bool{}, map[string]bool{}
	for _, rec := range pooled {
		skipNS[rec.NetNS], skipOwner[rec.TaskID] = true, true
	}
	var out []string
	if ents, err := os.ReadDir(m.nsDir); err == nil {
		for _, e := range ents {
			if p := filepath.Join(m.nsDir, e.Name()); !skipNS[p] {
				out = append(out, "netns "+p)
			}
		}
	} else if !os.IsNotExist(err) {
		return nil, err
	}
	nets, err := os.ReadDir(m.ipamDir)
	if err != nil {
		return nil, err
	}
	for _, n := range nets {
		leases, err := os.ReadDir(filepath.Join(m.ipamDir, n.Name()))
		if err != nil {
			return nil, err
		}
		for _, l := range leases {
			// host-local keeps a lock file and its allocation cursor
			// beside one file per leased address.
			if l.Name() == "lock" || strings.HasPrefix(l.Name(), "last_reserved_ip") {
				continue
			}
			owner, _ := os.ReadFile(filepath.Join(m.ipamDir, n.Name(), l.Name()))
			who := strings.Fields(string(owner) + " ?")[0]
			if !skipOwner[who] {
				out = append(out, fmt.Sprintf("lease %s in %s held by %s", l.Name(), n.Name(), who))
			}
		}
	}
	recs, err := os.ReadDir(m.stateDir)
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		if !skipOwner[strings.TrimSuffix(r.Name(), ".json")] {
			out = append(out, "task record "+filepath.Join(m.stateDir, r.Name()))
		}
	}
	return out, nil
}

// Pooled lists the pool's ready entries on the host, by namespace.
func (m *Manager) Pooled() ([]string, error) {
	recs, err := m.pooledRecords()
	var out []string
	for _, rec := range recs {
		out = append(out, rec.NetNS)
	}
	return out, err
}

// pooledRecords are the pool entries whose namespace and address exist.
func (m *Manager) pooledRecords() ([]*record, error) {
	ents, err := os.ReadDir(m.stateDir)
	if err != nil {
		return nil, err
	}
	var out []*record
	for _, e := range ents {
		id := strings.TrimSuffix(e.Name(), ".json")
		if !strings.HasPrefix(id, poolPrefix) {
			continue
		}
		rec, err := m.load(id)
		if err != nil || rec == nil || rec.Pool == "" || rec.IPv4 == "" {
			continue
		}
		if _, err := os.Stat(rec.NetNS); err == nil {
			out = append(out, rec)
		}
	}
	return out, nil
}

// BridgeName is the host bridge of a VPC (at most 15 bytes, the kernel's
// limit for interface names). It is keyed by the data directory too: two
// servers on one host keep separate address pools, so they must not share
// a bridge even when their VPC ids match.
func (m *Manager) BridgeName(vpcID string) string {
	h := sha256.Sum256([]byte(m.dataDir + "\x00" + vpcID))
	return "gtr-" + hex.EncodeToString(h[:5])
}

// MACFor is a stable MAC for a task without one: locally administered and
// unicast, as AWS's ENI addresses are.
func MACFor(taskID string) string {
	h := sha256.Sum256([]byte(taskID))
	hw := net.HardwareAddr{0x0a, h[0], h[1], h[2], h[3], h[4]}
	return hw.String()
}

func subnet(spec agent.NetworkSpec) (netip.Prefix, netip.Addr, error) {
	prefix, err := netip.ParsePrefix(spec.SubnetCIDR)
	if err != nil || !prefix.Addr().Is4() {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("subnet %s: CIDR %q is not an IPv4 network", spec.SubnetID, spec.SubnetCIDR)
	}
	if prefix.Bits() > 28 {
		return netip.Prefix{}, netip.Addr{}, fmt.Errorf("subnet %s: %s is smaller than a /28", spec.SubnetID, spec.SubnetCIDR)
	}
	prefix = prefix.Masked()
	gw := prefix.Addr().Next()
	if spec.Gateway != "" {
		if gw, err = netip.ParseAddr(spec.Gateway); err != nil || !prefix.Contains(gw) {
			return netip.Prefix{}, netip.Addr{}, fmt.Errorf("subnet %s: gateway %q is not in %s", spec.SubnetID, spec.Gateway, prefix)
		}
	}
	return prefix, gw, nil
}

// conflist is the task's CNI configuration. Addresses are handed out as
// AWS does: the first four and the last of a subnet are reserved.
func (m *Manager) conflist(spec agent.NetworkSpec, prefix netip.Prefix, gw netip.Addr) []byte {
	first := prefix.Addr().Next().Next().Next().Next()
	b := prefix.Addr().As4()
	v := binary.BigEndian.Uint32(b[:]) | (1<<(32-prefix.Bits()) - 1)
	binary.BigEndian.PutUint32(b[:], v-1)
	last := netip.AddrFrom4(b)
	netName := "gantry-" + sanitize(spec.SubnetID)
	if spec.SubnetID == "" {
		netName = "gantry-" + strings.NewReplacer(".", "-", "/", "-").Replace(prefix.String())
	}
	bridge := map[string]any{
		"type":   "bridge",
		"bridge": m.BridgeName(spec.VPCID),
		// The bridge plugin keeps one IPv4 address per bridge, and a VPC's
		// subnets share its bridge: ensureGateway gives the bridge every
		// subnet's gateway instead.
		"isGateway":   false,
		"ipMasq":      true,
		"hairpinMode": true,
		"ipam": map[string]any{
			"type":    "host-local",
			"dataDir": m.ipamDir,
			"ranges": [][]map[string]string{{{
				"subnet":     prefix.String(),
				"gateway":    gw.String(),
				"rangeStart": first.String(),
				"rangeEnd":   last.String(),
			}}},
			"routes": []map[string]string{{"dst": "0.0.0.0/0"}},
		},
	}
	plugins := []any{bridge}
	out, _ := json.Marshal(map[string]any{
		"cniVersion": "1.0.0",
		"name":       netName,
		"plugins":    plugins,
	})
	return out
}

// ensureGateway makes the VPC's bridge (if no task made it yet) and gives it
// the subnet's gateway address, so the host routes the subnet to it and the
// subnet's tasks route through it; a VPC's subnets reach each other through
// the host.
func ensureGateway(bridge, gateway string, prefix netip.Prefix) error {
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return fmt.Errorf("enable IPv4 forwarding: %w", err)
	}
	gw, err := netip.ParseAddr(gateway)
	if err != nil {
		return fmt.Errorf("gateway %q: %w", gateway, err)
	}
	link, err := netlink.LinkByName(bridge)
	if _, missing := err.(netlink.LinkNotFoundError); missing {
		err = netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridge, HardwareAddr: bridgeMAC(bridge)}})
		if err == nil || errors.Is(err, syscall.EEXIST) {
			link, err = netlink.LinkByName(bridge)
		}
	}
	if err != nil {
		return fmt.Errorf("bridge %s: %w", bridge, err)
	}
	if err := pinMAC(link); err != nil {
		return fmt.Errorf("bridge %s: %w", bridge, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: gw.AsSlice(), Mask: net.CIDRMask(prefix.Bits(), 32)}}
	if err := netlink.AddrAdd(link, addr); err != nil && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("gateway %s on bridge %s: %w", addr, bridge, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bridge %s up: %w", bridge, err)
	}
	return nil
}

// bridgeMAC is the address a bridge is made with: locally administered,
// unicast, and stable for the bridge's name.
func bridgeMAC(bridge string) net.HardwareAddr {
	h := sha256.Sum256([]byte("bridge\x00" + bridge))
	return net.HardwareAddr{0x02, h[0], h[1], h[2], h[3], h[4]}
}

// pinMAC makes the kernel keep the bridge's current MAC. A bridge whose
// address nobody set takes the lowest MAC among its ports and changes it as
// veths come and go; a task resolved its gateway to the old address, and
// once the veth that lent it is gone (another task stopped) the bridge no
// longer takes frames sent to it: the task's connections to the host (the
// metadata endpoint, the API) time out until its ARP entry expires, tens of
// seconds later. Setting the address, even to the one it has, marks it as
// chosen (addr_assign_type NET_ADDR_SET), which ends that. Bridges made
// here are made with an address; this pins ones made by an earlier version,
// keeping the address their tasks already know.
func pinMAC(link netlink.Link) error {
	b, err := os.ReadFile(filepath.Join("/sys/class/net", link.Attrs().Name, "addr_assign_type"))
	if err == nil && strings.TrimSpace(string(b)) == "3" { // NET_ADDR_SET
		return nil
	}
	if err := netlink.LinkSetHardwareAddr(link, link.Attrs().HardwareAddr); err != nil {
		return fmt.Errorf("pin MAC %s: %w", link.Attrs().HardwareAddr, err)
	}
	return nil
}

// inNamespace brings the task's loopback up and gives eth0 its MAC. Both are
// one netlink call each, done here rather than by the CNI loopback and
// tuning plugins: each plugin is a process to start, and a task start pays
// for every one of them (records from before this keep their conflist, with
// tuning, and tear down as they were set up).
func inNamespace(nsPath, mac string) error {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return err
	}
	return cnins.WithNetNSPath(nsPath, func(cnins.NetNS) error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return fmt.Errorf("loopback up: %w", err)
		}
		return setEthMAC(hw)
	})
}

// setEthMAC gives eth0 of the current namespace its MAC.
func setEthMAC(hw net.HardwareAddr) error {
	eth, err := netlink.LinkByName(ifName)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetHardwareAddr(eth, hw); err != nil {
		return fmt.Errorf("set MAC %s on %s: %w", hw, ifName, err)
	}
	return nil
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

func sanitize(s string) string { return unsafeChars.ReplaceAllString(s, "_") }

func validID(taskID string) error {
	if taskID == "" || unsafeChars.MatchString(taskID) {
		return fmt.Errorf("invalid task id %q", taskID)
	}
	return nil
}

func (m *Manager) recordPath(taskID string) string {
	return filepath.Join(m.stateDir, taskID+".json")
}

func (m *Manager) save(rec *record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	tmp := m.recordPath(rec.TaskID) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, m.recordPath(rec.TaskID))
}

// load returns the task's record, or nil if it has none.
func (m *Manager) load(taskID string) (*record, error) {
	b, err := os.ReadFile(m.recordPath(taskID))
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("task %s network record: %w", taskID, err)
	}
	return &rec, nil
}
