package test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// publicTestRange picks a /24 of 198.19.0.0/16 (Gantry's default public
// range) that nothing on this host routes yet, and routes it into an
// interface of the test's own: if forwarding to a task ever failed, the
// test's packets would die there instead of leaving the machine by the
// default route.
func publicTestRange(t *testing.T) string {
	out, _ := exec.Command("ip", "-4", "-o", "route").Output()
	for range 100 {
		cidr := fmt.Sprintf("198.19.%d.0/24", rand.IntN(256))
		if strings.Contains(string(out), strings.TrimSuffix(cidr, "0/24")) {
			continue
		}
		// A veth whose peer sits alone in a namespace of the test's: what
		// goes in there is dropped.
		tag := rand.IntN(1e6)
		dev, ns := fmt.Sprintf("gtpub%d", tag), fmt.Sprintf("gantry-test-pub%d", tag)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run(); exec.Command("ip", "link", "del", dev).Run() })
		for _, args := range [][]string{{"netns", "add", ns}, {"link", "add", dev, "type", "veth", "peer", "name", dev + "p", "netns", ns},
			{"link", "set", dev, "up"}, {"route", "add", cidr, "dev", dev}} {
			if b, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				t.Fatalf("ip %v: %v: %s", args, err, b)
			}
		}
		return cidr
	}
	t.Fatal("no free /24 in 198.19.0.0/16")
	return ""
}

// echoFromHost sends a token to addr over TCP from the host, up to tries
// times, and reports whether it came back.
func echoFromHost(addr string, tries int) error {
	var err error
	for range tries {
		var c net.Conn
		if c, err = net.DialTimeout("tcp4", addr, 2*time.Second); err != nil {
			time.Sleep(300 * time.Millisecond)
			continue
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		c.Write([]byte("gantry"))
		b := make([]byte, 6)
		_, err = io.ReadFull(c, b)
		c.Close()
		if err == nil && string(b) == "gantry" {
			return nil
		}
	}
	return err
}

type cliENIs struct {
	NetworkInterfaces []struct {
		NetworkInterfaceId string
		Association        *struct{ PublicIp, IpOwnerId string }
	}
}

// TestPublicIP: assignPublicIp ENABLED gives the ENI a public address, as
// DescribeNetworkInterfaces shows it, and the host reaches the task on it
// under the task's security groups; DISABLED gives none; a VPC without an
// internet gateway gets the address but nothing reaches the task by it.
func TestPublicIP(t *testing.T) {
	pubRange := publicTestRange(t)
	n := newNetTest(t, "--public-ip-range", pubRange)
	vpc, _ := n.defaultVPC()
	subnet := defaultSubnet(t, n.s)
	web := n.group(vpc, "web")
	n.s.MustAWS(nil, "ec2", "authorize-security-group-ingress", "--group-id", web, "--protocol", "tcp", "--port", "7000", "--cidr", "0.0.0.0/0")

	run := func(subnet, assign string, groups ...string) cliTask {
		cfg := fmt.Sprintf("awsvpcConfiguration={subnets=[%s],securityGroups=[%s],assignPublicIp=%s}", subnet, strings.Join(groups, ","), assign)
		task := runTask(t, n.s, "--cluster", "net", "--task-definition", "echo", "--network-configuration", cfg)
		return waitStatus(t, n.s, "net", task.TaskArn, "RUNNING", 2*time.Minute)
	}
	public := func(task cliTask) string {
		var out cliENIs
		n.s.MustAWS(&out, "ec2", "describe-network-interfaces", "--network-interface-ids", task.eniDetail("networkInterfaceId"))
		if len(out.NetworkInterfaces) != 1 {
			t.Fatalf("ENI of %s: %+v", task.TaskArn, out)
		}
		if a := out.NetworkInterfaces[0].Association; a != nil {
			return a.PublicIp
		}
		return ""
	}

	on := run(subnet, "ENABLED", web)
	pub := public(on)
	if p, err := netip.ParseAddr(pub); err != nil || !netip.MustParsePrefix(pubRange).Contains(p) {
		t.Fatalf("public IP %q, want one in %s", pub, pubRange)
	}
	for _, d := range on.Attachments[0].Details {
		if strings.Contains(strings.ToLower(d.Name), "public") {
			t.Errorf("DescribeTasks attachment carries %s (AWS's does not)", d.Name)
		}
	}
	var byFilter cliENIs
	n.s.MustAWS(&byFilter, "ec2", "describe-network-interfaces", "--filters", "Name=association.public-ip,Values="+pub)
	if len(byFilter.NetworkInterfaces) != 1 {
		t.Errorf("filter association.public-ip=%s: %d ENIs", pub, len(byFilter.NetworkInterfaces))
	}
	if err := echoFromHost(pub+":7000", 5); err != nil {
		t.Errorf("host to %s:7000 (allowed): %v", pub, err)
	}
	if err := echoFromHost(pub+":7001", 1); err == nil {
		t.Errorf("host reached %s:7001, which no rule allows", pub)
	}

	off := run(subnet, "DISABLED", web)
	if p := public(off); p != "" {
		t.Errorf("assignPublicIp DISABLED: public IP %s", p)
	}

	// A VPC of one's own has no internet gateway: the address is given,
	// as AWS gives it, but does not lead to the task.
	x := freeTestRange(t)
	own := n.vpc(x + ".0.0/16")
	private := run(n.subnet(own, x+".1.0/24"), "ENABLED", n.openGroup(own))
	priv := public(private)
	if priv == "" || priv == pub {
		t.Errorf("task in a VPC without an internet gateway: public IP %q (other task's: %s)", priv, pub)
	} else {
		time.Sleep(time.Second) // longer than a forwarding would take to appear
		if echoFromHost(priv+":7000", 1) == nil {
			t.Errorf("reached %s in a VPC without an internet gateway", priv)
		}
	}

	n.stopAll()
	assertNothingLeft(t, n.s)
	if out, ok := nftTable(t, fwTable(n.s)); ok {
		t.Errorf("table left after every task stopped:\n%s", out)
	}
}
