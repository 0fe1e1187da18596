package metadata

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
)

// The AWS API as tasks reach it.
//
// The server's own listener (--listen, 127.0.0.1:8910) is out of a task's
// reach: loopback is not routed from another namespace. Tasks reach the
// host on Address through their default route (see the package comment),
// so the API is served there too, on a port of its own, and containers get
// AWS_ENDPOINT_URL naming it. Nothing on that address is trusted for who
// is asking: the API still verifies SigV4 on every request, so a task acts
// only as the credentials it holds (its role's, or keys it was given), and
// the account those belong to is the only one it can see. Only the host
// and tasks may connect at all: see guard.

// ListenAPI opens the task-facing API listener on Address. The port is the
// one this data directory had before (DATA_DIR/agent/api-port), so that
// containers still running from before a restart keep a working
// AWS_ENDPOINT_URL; else prefer (the port of --listen, so that users see
// one port number), else any. The caller serves the API on it.
func (s *Server) ListenAPI(prefer int) (net.Listener, error) {
	var ports []string
	if prefer > 0 {
		ports = append(ports, strconv.Itoa(prefer))
	}
	ln, port, err := listenKept(s.dataDir, "api-port", append(ports, "0")...)
	if err != nil {
		return nil, fmt.Errorf("API for tasks: %w", err)
	}
	s.apiURL = "http://" + net.JoinHostPort(Address, strconv.Itoa(port))
	s.apiPort = uint16(port)
	if err := s.guard(); err != nil {
		// Without the guard the API would answer any neighbour that
		// routes Address to this host: better no API for tasks.
		ln.Close()
		s.apiURL, s.apiPort = "", 0
		return nil, fmt.Errorf("API for tasks: %w", err)
	}
	return ln, nil
}

// APIURL is the value of AWS_ENDPOINT_URL in containers: where tasks reach
// the AWS API ("" when ListenAPI was not called or failed).
func (s *Server) APIURL() string { return s.apiURL }

// guardTable names the nftables table that keeps strangers off this
// server's ports on Address, keyed by the data directory like the
// server's other tables, so servers sharing the host keep their own.
func guardTable(dataDir string) string {
	abs, _ := filepath.Abs(dataDir)
	h := sha256.Sum256([]byte(abs))
	return "gantry-" + hex.EncodeToString(h[:5]) + "-md"
}
