// Package metadata is the ECS task metadata endpoint (v4, and v3 with the
// same answers) that containers find through ECS_CONTAINER_METADATA_URI_V4.
//
// As on Fargate it answers on 169.254.170.2. The address sits on the host's
// loopback interface; a task's namespace reaches it through its default
// route, the VPC bridge's gateway, and the kernel delivers it locally
// without masquerading, so the request keeps the task's own address as its
// source. Each container's URL ends in its runtime id (the DockerId, as on
// Fargate); a request is answered only when its source address is the
// address of the task that container belongs to, so one task cannot read
// another's metadata even knowing its ids.
package metadata

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/gantry-dev/gantry/internal/agent"
)

// Address is where Fargate serves task metadata.
const Address = "169.254.170.2"

// Task is what the endpoint needs to know about the task a container
// belongs to.
type Task struct {
	Spec   agent.TaskSpec
	Status agent.TaskStatus
	// Self is the asking container's index in Spec.Containers.
	Self          int
	DesiredStatus string // RUNNING, or STOPPED once the task is stopping
	// EphemeralUsedMiB is what the containers wrote to their filesystems.
	EphemeralUsedMiB int64
}

// Provider is the agent side of the endpoint.
type Provider interface {
	// TaskMetadata finds the task of the container with runtime id id.
	TaskMetadata(id string) (Task, bool)
	// ContainerStats returns the stats of t's containers with runtime ids
	// ids (nil for one with none: not running, or not sampled yet). Asked
	// only by the /stats paths: some containers' stats are read only when
	// someone wants them.
	ContainerStats(t Task, ids []string) map[string]*Stats
}

// Server serves the endpoint for one agent.
type Server struct {
	ln   net.Listener
	srv  *http.Server
	url  string
	log  *slog.Logger
	prov Provider
	// dataDir keeps the ports and names the guard's table; port is the
	// metadata's, apiPort the task-facing API's (0: none).
	dataDir       string
	port, apiPort uint16
	apiURL        string
	// Credentials mints task role credentials (set before Serve); nil:
	// tasks with a role get none.
	Credentials CredentialSource
	creds       credCache
}

// Listen puts Address on the host's loopback and listens on it. The port
// is 80 as on Fargate when free; several servers on one host each take
// another (URLs come from the environment, so clients do not care), and a
// server keeps the port it had (DATA_DIR/agent/metadata-port) so that
// containers still running from before a restart keep a working URL.
func Listen(dataDir string, log *slog.Logger) (*Server, error) {
	if err := addAddress(); err != nil {
		return nil, fmt.Errorf("task metadata endpoint: %w", err)
	}
	ln, port, err := listenKept(dataDir, "metadata-port", "80", "0")
	if err != nil {
		return nil, fmt.Errorf("task metadata endpoint: %w", err)
	}
	s := &Server{ln: ln, log: log, url: "http://" + Address, dataDir: dataDir, port: uint16(port)}
	if port != 80 {
		s.url += ":" + strconv.Itoa(port)
	}
	if err := s.guard(); err != nil {
		// The metadata checks each caller's address itself: it works,
		// only strangers' connections are not dropped early.
		log.Warn("task metadata endpoint: cannot keep non-task callers away", "err", err)
	}
	return s, nil
}

// addAddress adds Address/32 to lo, once per host: servers share it.
func addAddress() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	addr, _ := netlink.ParseAddr(Address + "/32")
	if err := netlink.AddrAdd(lo, addr); err != nil && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("add %s to lo: %w", Address, err)
	}
	return nil
}

// URL is the endpoint's base, e.g. http://169.254.170.2.
func (s *Server) URL() string { return s.url }

// ContainerURIs are the values of ECS_CONTAINER_METADATA_URI_V4 and
// ECS_CONTAINER_METADATA_URI for the container with runtime id id.
func (s *Server) ContainerURIs(id string) (v4, v3 string) {
	return s.url + "/v4/" + id, s.url + "/v3/" + id
}

// Serve answers requests from p's containers until Close.
func (s *Server) Serve(p Provider) {
	s.prov = p
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("task metadata endpoint stopped", "err", err)
		}
	}()
}

func (s *Server) Close() error {
	defer s.unguard()
	if s.srv == nil {
		return s.ln.Close()
	}
	return s.srv.Close()
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	// /v4/<id>[/task][/stats]
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) == 3 && parts[0] == "v2" && parts[1] == "credentials" {
		s.serveCredentials(w, r, parts[2])
		return
	}
	if len(parts) < 2 || (parts[0] != "v4" && parts[0] != "v3") {
		http.NotFound(w, r)
		return
	}
	v4, id, rest := parts[0] == "v4", parts[1], strings.Join(parts[2:], "/")
	t, ok := s.prov.TaskMetadata(id)
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	if !ok || t.Status.IPv4Address == "" || host != t.Status.IPv4Address {
		// The same answer for an unknown id and a foreign caller: a task
		// learns nothing about others by probing.
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such container in the caller's task"})
		return
	}
	switch rest {
	case "":
		writeJSON(w, http.StatusOK, containerMetadata(t, t.Self, v4))
	case "task":
		writeJSON(w, http.StatusOK, taskMetadata(t, v4))
	case "stats":
		self := t.Status.Containers[t.Self].RuntimeID
		writeJSON(w, http.StatusOK, s.prov.ContainerStats(t, []string{self})[self])
	case "task/stats":
		var ids []string
		for _, c := range t.Status.Containers {
			if c.RuntimeID != "" {
				ids = append(ids, c.RuntimeID)
			}
		}
		out := s.prov.ContainerStats(t, ids)
		if out == nil {
			out = map[string]*Stats{}
		}
		writeJSON(w, http.StatusOK, out)
	default:
		http.NotFound(w, r)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

// listenKept listens on Address at the port this data directory used last
// (kept in agent/<name>: running tasks' containers were given URLs with
// it), else the first of ports that is free, and keeps the one it got.
func listenKept(dataDir, name string, ports ...string) (net.Listener, int, error) {
	portFile := filepath.Join(dataDir, "agent", name)
	if b, err := os.ReadFile(portFile); err == nil {
		ports = append([]string{strings.TrimSpace(string(b))}, ports...)
	}
	var ln net.Listener
	var err error
	for _, p := range ports {
		if ln, err = net.Listen("tcp4", net.JoinHostPort(Address, p)); err == nil {
			break
		}
	}
	if err != nil {
		return nil, 0, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := os.MkdirAll(filepath.Dir(portFile), 0o700); err == nil {
		os.WriteFile(portFile, []byte(strconv.Itoa(port)), 0o600)
	}
	return ln, port, nil
}
