// Package testnet lets tests reach task addresses without ever sending
// traffic off the machine.
package testnet

import (
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// HTTPGet fetches http://IP:port/path from a task's private address. It
// first checks that the host routes IP onto one of Gantry's bridges: with no
// route to a task network the request would leave through the default
// gateway, and tests must never send traffic off this machine.
func HTTPGet(t testing.TB, ip string, port int, path string) (string, error) {
	t.Helper()
	out, err := exec.Command("ip", "-o", "route", "get", ip).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ip route get %s: %v: %s", ip, err, out)
	}
	f := strings.Fields(string(out))
	dev := ""
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "dev" {
			dev = f[i+1]
		}
	}
	if !strings.HasPrefix(dev, "gtr-") {
		return "", fmt.Errorf("refusing to contact %s: it is not routed to a Gantry bridge (%s)", ip, strings.TrimSpace(string(out)))
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Get(fmt.Sprintf("http://%s:%d%s", ip, port, path))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s", resp.Request.URL, resp.Status)
	}
	return string(b), err
}
