package elbv2

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gantry-dev/gantry/internal/ecs"
	"github.com/gantry-dev/gantry/internal/state"
)

// The data plane: what the stored load balancers, listeners and target
// groups mean on this host. It is rebuilt from the store after every API
// write and every couple of seconds (reconcile), so a restarted server
// serves the same listeners; target health lives only in memory and starts
// again from "initial".

const (
	reconcileInterval = 2 * time.Second
	// metricsInterval is how often request counts become datapoints.
	metricsInterval = 2 * time.Second
)

type plane struct {
	s     *Service
	mu    sync.Mutex               // held by reconcile
	lis   map[string]*liveListener // by host:port
	pools map[string]*pool         // by target group ARN
	owned map[string]map[string]bool
	// tgLBs are the load balancers whose listeners or rules forward to
	// each target group: the groups CloudWatch metrics are published for.
	tgLBs  map[string][]string
	proxy  *httputil.ReverseProxy
	up     *upstream
	wake   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

type liveListener struct {
	arn    string
	addr   string
	port   string
	srv    *http.Server
	routes atomic.Pointer[routeTable]
	p      *plane
	// opts are the load balancer's attributes that act on requests, set
	// by reconcile and read once by every request; nil is the defaults.
	opts atomic.Pointer[lbOptions]
	// resp is what the listener's attributes do to responses; nil is
	// the defaults.
	resp atomic.Pointer[listenerResponse]
	// front holds the open client connections (net.Conn -> *frontConn).
	front sync.Map
}

// lbOptions are the load balancer attributes the data path applies.
type lbOptions struct {
	idle      time.Duration // idle_timeout.timeout_seconds
	keepAlive time.Duration // client_keep_alive.seconds
	xffMode   string        // routing.http.xff_header_processing.mode
	xffPort   bool          // routing.http.xff_client_port.enabled
}

func (lb *lbRecord) options() *lbOptions {
	return &lbOptions{idle: lb.idleTimeout(), keepAlive: lb.seconds(attrClientKeepAlive, defaultClientKeepAlive), xffMode: lb.attr("routing.http.xff_header_processing.mode"),
		xffPort: lb.attr("routing.http.xff_client_port.enabled") == "true"}
}

// routeTable is a listener's rules in priority order and its default
// action, with their target groups resolved to live pools.
type routeTable struct {
	rules []liveRule
	def   liveAction
}

type liveRule struct {
	conds  []conditionRecord
	action liveAction
}

type liveAction struct {
	fixed  *fixedResponse
	groups []*pool
	// weights are cumulative, for a weighted pick among groups.
	weights []int
}

func (p *plane) liveAction(acts []actionRecord) liveAction {
	var la liveAction
	if len(acts) == 0 {
		return la
	}
	a := acts[0]
	if a.Type == "fixed-response" {
		la.fixed = a.Fixed
		return la
	}
	sum := 0
	for _, g := range a.groups() {
		pl := p.pools[g.ARN]
		if pl == nil || g.Weight <= 0 {
			continue
		}
		sum += int(g.Weight)
		la.groups = append(la.groups, pl)
		la.weights = append(la.weights, sum)
	}
	return la
}

// pool picks the target group for one request by weight.
func (la *liveAction) pool() *pool {
	switch len(la.groups) {
	case 0:
		return nil
	case 1:
		return la.groups[0]
	}
	n := mrand.IntN(la.weights[len(la.weights)-1])
	for i, w := range la.weights {
		if n < w {
			return la.groups[i]
		}
	}
	return la.groups[len(la.groups)-1]
}

type pool struct {
	arn      string
	hc       atomic.Pointer[healthCheck]
	mu       sync.Mutex
	targets  map[string]*target // by ip:port
	list     []*target
	rr       atomic.Uint64
	requests atomic.Int64
	// leastOutstanding is load_balancing.algorithm.type
	// least_outstanding_requests.
	leastOutstanding atomic.Bool
	// published is requests as of the last metrics datapoint (plane.mu).
	published int64
}

type target struct {
	addr, id string
	port     int32
	draining atomic.Bool
	stop     chan struct{}
	// inflight counts the requests the listeners sent it that have not
	// been answered yet.
	inflight atomic.Int64
	// kick makes the checker check at once, when the group's health
	// check settings change, instead of after the old interval.
	kick chan struct{}

	mu                 sync.Mutex
	state, reason, why string
	ok, fail           int
	dialFailed         bool
}

type healthState struct{ state, reason, desc string }

// Start restores the data plane from the store and keeps it in line.
func (s *Service) Start(ctx context.Context) {
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p := &plane{s: s, lis: map[string]*liveListener{}, pools: map[string]*pool{}, owned: map[string]map[string]bool{},
		wake: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{}), up: newUpstream()}
	p.proxy = p.newProxy()
	s.plane = p
	if err := p.reconcile(bg); err != nil {
		s.logger().Warn("load balancers: restore", "err", err)
	}
	go func() {
		defer close(p.done)
		t := time.NewTicker(reconcileInterval)
		defer t.Stop()
		lastMetrics := time.Now()
		for {
			select {
			case <-bg.Done():
				return
			case <-t.C:
			case <-p.wake:
			}
			p.up.closeIdle(false)
			if err := p.expireDrained(bg); err != nil && bg.Err() == nil {
				s.logger().Warn("load balancers: drain", "err", err)
			}
			if err := p.reconcile(bg); err != nil && bg.Err() == nil {
				s.logger().Warn("load balancers: reconcile", "err", err)
			}
			if time.Since(lastMetrics) >= metricsInterval {
				lastMetrics = time.Now()
				p.publishMetrics(bg, lastMetrics)
			}
		}
	}()
}

// newProxy is the listeners' reverse proxy: the picked target gets the
// request with the headers an ALB adds.
func (p *plane) newProxy() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			ps := pr.In.Context().Value(pickKey{}).(*pickState)
			pr.SetURL(&url.URL{Scheme: "http", Host: ps.target.addr})
			pr.Out.Host = pr.In.Host
			// An ALB appends the client's address to the X-Forwarded-For
			// it got, unless its xff_header_processing.mode says to pass
			// that on as it is or drop it; Rewrite starts from an
			// outbound request without it.
			xff := pr.In.Header["X-Forwarded-For"]
			if len(xff) > 0 {
				pr.Out.Header["X-Forwarded-For"] = xff
			}
			pr.SetXForwarded()
			if o := ps.opts; o != nil {
				switch o.xffMode {
				case "preserve":
					if len(xff) > 0 {
						pr.Out.Header["X-Forwarded-For"] = xff
					} else {
						delete(pr.Out.Header, "X-Forwarded-For")
					}
				case "remove":
					delete(pr.Out.Header, "X-Forwarded-For")
				default:
					if o.xffPort {
						v := pr.In.RemoteAddr
						if len(xff) > 0 {
							v = strings.Join(xff, ", ") + ", " + v
						}
						pr.Out.Header["X-Forwarded-For"] = []string{v}
					}
				}
			}
			pr.Out.Header["X-Forwarded-Port"] = []string{ps.port}
		},
		Transport: &retryTransport{base: p.up},
		// Without a pool every proxied response allocates its own 32 KiB
		// copy buffer.
		BufferPool: &bufferPool{},
		ModifyResponse: func(resp *http.Response) error {
			if ps, _ := resp.Request.Context().Value(pickKey{}).(*pickState); ps != nil && ps.resp != nil {
				ps.resp.apply(resp.Header, false)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p.s.logger().Debug("load balancer: target failed", "err", err)
			ps, _ := r.Context().Value(pickKey{}).(*pickState)
			var lr *listenerResponse
			if ps != nil {
				lr = ps.resp
			}
			errorPage(w, targetErrorStatus(err), lr)
		},
	}
}

// Stop closes every listener and stops health checks.
func (s *Service) Stop() {
	p := s.plane
	if p == nil {
		return
	}
	p.cancel()
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, l := range p.lis {
		l.srv.Close()
		delete(p.lis, k)
	}
	for k, pl := range p.pools {
		pl.close()
		delete(p.pools, k)
	}
	p.up.closeIdle(true)
}

// RequestCount is how many requests listeners have sent to a target
// group since the server started (ALBRequestCountPerTarget's numerator).
func (s *Service) RequestCount(targetGroupARN string) int64 {
	if s.plane == nil {
		return 0
	}
	s.plane.mu.Lock()
	pl := s.plane.pools[targetGroupARN]
	s.plane.mu.Unlock()
	if pl == nil {
		return 0
	}
	return pl.requests.Load()
}

func (s *Service) changed() {
	if s.plane == nil {
		return
	}
	// In the caller's time, so a target registered or a listener created
	// is in effect when the API answers.
	if err := s.plane.reconcile(context.Background()); err != nil {
		s.logger().Warn("load balancers: reconcile", "err", err)
	}
}

func (s *Service) syncPlane(r *request) error {
	s.changed()
	return nil
}

func (p *plane) checkBind(addr string, port int32) error {
	if p == nil {
		return nil
	}
	key := net.JoinHostPort(addr, strconv.Itoa(int(port)))
	p.mu.Lock()
	_, live := p.lis[key]
	p.mu.Unlock()
	if live {
		return nil
	}
	ln, err := net.Listen("tcp", key)
	if err != nil {
		return err
	}
	return ln.Close()
}

func (p *plane) health(tgARN, id string, port int32) healthState {
	p.mu.Lock()
	pl := p.pools[tgARN]
	p.mu.Unlock()
	if pl != nil {
		pl.mu.Lock()
		t := pl.targets[net.JoinHostPort(id, strconv.Itoa(int(port)))]
		pl.mu.Unlock()
		if t != nil {
			t.mu.Lock()
			defer t.mu.Unlock()
			return healthState{t.state, t.reason, t.why}
		}
	}
	return healthState{"initial", "Elb.RegistrationInProgress", "Target registration is in progress"}
}

// TargetHealth reports a target's health as the data plane sees it, for
// the ECS service scheduler (ecs.TargetRegistrar).
func (s *Service) TargetHealth(tgARN, ip string, port int32) ecs.TargetHealth {
	p := s.plane
	if p == nil {
		return ecs.TargetHealth{}
	}
	p.mu.Lock()
	pl := p.pools[tgARN]
	p.mu.Unlock()
	if pl == nil {
		return ecs.TargetHealth{}
	}
	pl.mu.Lock()
	t := pl.targets[net.JoinHostPort(ip, strconv.Itoa(int(port)))]
	pl.mu.Unlock()
	if t == nil {
		return ecs.TargetHealth{}
	}
	if t.draining.Load() {
		return ecs.TargetHealth{State: "draining", Reason: "Target.DeregistrationInProgress", Description: "Target deregistration is in progress"}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return ecs.TargetHealth{State: t.state, Reason: t.reason, Description: t.why}
}

func (p *plane) reconcile(ctx context.Context) error {
	var lbs []lbRecord
	var tgs []tgRecord
	var ls []listenerRecord
	var rules []ruleRecord
	err := p.s.Store.View(ctx, func(tx state.Tx) error {
		var err error
		if lbs, err = state.List[lbRecord](tx, kindLB, ""); err != nil {
			return err
		}
		if rules, err = state.List[ruleRecord](tx, kindRule, ""); err != nil {
			return err
		}
		if tgs, err = state.List[tgRecord](tx, kindTG, ""); err != nil {
			return err
		}
		ls, err = state.List[listenerRecord](tx, kindListener, "")
		return err
	})
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()

	owned := map[string]map[string]bool{}
	seen := map[string]bool{}
	for i := range tgs {
		g := &tgs[i]
		seen[g.ARN] = true
		pl := p.pools[g.ARN]
		if pl == nil {
			pl = &pool{arn: g.ARN, targets: map[string]*target{}}
			p.pools[g.ARN] = pl
		}
		hc := g.HealthCheck
		old := pl.hc.Swap(&hc)
		pl.leastOutstanding.Store(g.attr(attrAlgorithm) == "least_outstanding_requests")
		hcChanged := old != nil && *old != hc
		want := map[string]bool{}
		for _, tr := range g.Targets {
			key := net.JoinHostPort(tr.ID, strconv.Itoa(int(tr.Port)))
			want[key] = true
			pl.mu.Lock()
			t := pl.targets[key]
			if t == nil {
				t = &target{addr: key, id: tr.ID, port: tr.Port, stop: make(chan struct{}), kick: make(chan struct{}, 1),
					state: "initial", reason: "Elb.InitialHealthChecking", why: "Initial health checks in progress"}
				pl.targets[key] = t
				pl.list = append(pl.list, t)
				go t.run(pl)
			}
			pl.mu.Unlock()
			if t.draining.Load() && tr.DrainUntil == nil {
				// Registered again while draining: most likely another
				// task given the departed one's address, so its health
				// is checked from the start, as a new registration's.
				t.mu.Lock()
				t.state, t.reason, t.why = "initial", "Elb.InitialHealthChecking", "Initial health checks in progress"
				t.ok, t.fail, t.dialFailed = 0, 0, false
				t.mu.Unlock()
			}
			t.draining.Store(tr.DrainUntil != nil)
			if tr.Owner != "" && tr.DrainUntil == nil {
				if owned[tr.Owner] == nil {
					owned[tr.Owner] = map[string]bool{}
				}
				owned[tr.Owner][g.ARN+"|"+key] = true
			}
		}
		pl.mu.Lock()
		for key, t := range pl.targets {
			if hcChanged {
				select {
				case t.kick <- struct{}{}:
				default:
				}
			}
			if !want[key] {
				close(t.stop)
				p.up.forget(key)
				delete(pl.targets, key)
				pl.list = slices.DeleteFunc(pl.list, func(x *target) bool { return x == t })
			}
		}
		pl.mu.Unlock()
	}
	for arn, pl := range p.pools {
		if !seen[arn] {
			pl.mu.Lock()
			for key := range pl.targets {
				p.up.forget(key)
			}
			pl.mu.Unlock()
			pl.close()
			delete(p.pools, arn)
		}
	}
	p.owned = owned

	addrOf := map[string]string{}
	optsOf := map[string]*lbOptions{}
	for i := range lbs {
		addrOf[lbs[i].ARN] = lbs[i].Address
		optsOf[lbs[i].ARN] = lbs[i].options()
	}
	tgLBs := map[string][]string{}
	lbOfListener := map[string]string{}
	uses := func(lb string, acts []actionRecord) {
		for _, a := range acts {
			for _, g := range a.groups() {
				if _, ok := addrOf[lb]; ok && !slices.Contains(tgLBs[g.ARN], lb) {
					tgLBs[g.ARN] = append(tgLBs[g.ARN], lb)
				}
			}
		}
	}
	for _, l := range ls {
		lbOfListener[l.ARN] = l.LBARN
		uses(l.LBARN, l.Actions)
	}
	for _, x := range rules {
		uses(lbOfListener[x.ListenerARN], x.Actions)
	}
	p.tgLBs = tgLBs
	wantL := map[string]bool{}
	for _, l := range ls {
		addr, ok := addrOf[l.LBARN]
		if !ok || len(l.Actions) == 0 {
			continue
		}
		key := net.JoinHostPort(addr, strconv.Itoa(int(l.Port)))
		wantL[key] = true
		live := p.lis[key]
		if live == nil || live.arn != l.ARN {
			if live != nil {
				live.srv.Close()
			}
			ln, err := net.Listen("tcp", key)
			if err != nil {
				p.s.logger().Warn("load balancer listener", "listener", l.ARN, "address", key, "err", err)
				delete(p.lis, key)
				continue
			}
			live = &liveListener{arn: l.ARN, addr: key, port: strconv.Itoa(int(l.Port)), p: p}
			live.srv = live.newServer()
			go live.srv.Serve(ln)
			p.lis[key] = live
		}
		if o := live.opts.Load(); o == nil || *o != *optsOf[l.LBARN] {
			live.opts.Store(optsOf[l.LBARN])
		}
		if lr := l.response(); !lr.equal(live.resp.Load()) {
			live.resp.Store(lr)
		}
		rt := &routeTable{def: p.liveAction(l.Actions)}
		var mine []ruleRecord
		for _, x := range rules {
			if x.ListenerARN == l.ARN {
				mine = append(mine, x)
			}
		}
		sortRules(mine)
		for _, x := range mine {
			rt.rules = append(rt.rules, liveRule{conds: x.Conditions, action: p.liveAction(x.Actions)})
		}
		live.routes.Store(rt)
	}
	for key, l := range p.lis {
		if !wantL[key] {
			l.srv.Close()
			delete(p.lis, key)
		}
	}
	return nil
}

// expireDrained removes targets whose deregistration delay is over.
func (p *plane) expireDrained(ctx context.Context) error {
	now := time.Now()
	due := false
	err := p.s.Store.View(ctx, func(tx state.Tx) error {
		return tx.Scan(kindTG, "", "", 0, func(_ string, data []byte) error {
			var g tgRecord
			if err := json.Unmarshal(data, &g); err != nil {
				return err
			}
			if slices.ContainsFunc(g.Targets, func(t targetRecord) bool { return t.DrainUntil != nil && !t.DrainUntil.After(now) }) {
				due = true
				return state.ErrStop
			}
			return nil
		})
	})
	if err != nil || !due {
		return err
	}
	return p.s.Store.Update(ctx, func(tx state.Tx) error {
		gs, err := state.List[tgRecord](tx, kindTG, "")
		if err != nil {
			return err
		}
		for i := range gs {
			g := &gs[i]
			n := len(g.Targets)
			g.Targets = slices.DeleteFunc(g.Targets, func(t targetRecord) bool { return t.DrainUntil != nil && !t.DrainUntil.After(now) })
			if len(g.Targets) != n {
				if err := tx.Put(kindTG, g.ARN, g); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func (pl *pool) close() {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	for k, t := range pl.targets {
		close(t.stop)
		delete(pl.targets, k)
	}
	pl.list = nil
}

// pick chooses the next serving target, skipping tried ones: round-robin,
// or with load_balancing.algorithm.type least_outstanding_requests the one
// with the fewest requests in flight, round-robin among equals.
func (pl *pool) pick(tried []*target) *target {
	pl.mu.Lock()
	list := pl.list
	pl.mu.Unlock()
	n := uint64(len(list))
	if n == 0 {
		return nil
	}
	lor := pl.leastOutstanding.Load()
	var best *target
	var bestLoad int64
	start := pl.rr.Add(1)
	for i := uint64(0); i < n; i++ {
		t := list[(start+i)%n]
		if !t.serving() || slices.Contains(tried, t) {
			continue
		}
		if !lor {
			return t
		}
		if l := t.inflight.Load(); best == nil || l < bestLoad {
			best, bestLoad = t, l
		}
	}
	return best
}

func (t *target) serving() bool {
	if t.draining.Load() {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.state == "healthy" && !t.dialFailed
}

// run health-checks the target at the group's interval until stopped; the
// first check is at once, and so is the first after the group's settings
// change (kick).
func (t *target) run(pl *pool) {
	client := &http.Client{
		Transport:     &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	for {
		hc := pl.hc.Load()
		t.check(client, hc)
		timer := time.NewTimer(time.Duration(hc.Interval) * time.Second)
		select {
		case <-t.stop:
			timer.Stop()
			return
		case <-t.kick:
			timer.Stop()
		case <-timer.C:
		}
	}
}

func (t *target) check(client *http.Client, hc *healthCheck) {
	if !hc.Enabled {
		// Without health checks a load balancer sends traffic to every
		// registered target.
		t.mu.Lock()
		t.state, t.reason, t.why = "healthy", "", ""
		t.mu.Unlock()
		return
	}
	host := t.addr
	if hc.Port != "traffic-port" {
		host = net.JoinHostPort(t.id, hc.Port)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(hc.Timeout)*time.Second)
	defer cancel()
	go func() {
		select {
		case <-t.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+hc.Path, nil)
	req.Header.Set("User-Agent", "ELB-HealthChecker/2.0")
	resp, err := client.Do(req)
	good, reason, why := false, "", ""
	switch {
	case err != nil && ctx.Err() == context.DeadlineExceeded:
		reason, why = "Target.Timeout", "Request timed out"
	case err != nil:
		reason, why = "Target.FailedHealthChecks", "Health checks failed"
	default:
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		m, _ := parseMatcher(hc.Matcher)
		if m.match(resp.StatusCode) {
			good = true
		} else {
			reason, why = "Target.ResponseCodeMismatch", fmt.Sprintf("Health checks failed with these codes: [%d]", resp.StatusCode)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if good {
		t.ok, t.fail, t.dialFailed = t.ok+1, 0, false
		if t.state != "healthy" && t.ok >= int(hc.Healthy) || t.state == "healthy" {
			t.state, t.reason, t.why = "healthy", "", ""
		}
		return
	}
	t.ok, t.fail = 0, t.fail+1
	if t.state == "unhealthy" || t.fail >= int(hc.Unhealthy) {
		t.state, t.reason, t.why = "unhealthy", reason, why
	}
}

type pickKey struct{}

type pickState struct {
	pool   *pool
	target *target
	port   string            // the listener's, for X-Forwarded-Port
	opts   *lbOptions        // the load balancer's; nil: the defaults
	resp   *listenerResponse // the listener's; nil: the defaults
}

func (l *liveListener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rt := l.routes.Load()
	lr := l.resp.Load()
	if keepAliveOver(r, l.options()) {
		w.Header().Set("Connection", "close")
	}
	if rt == nil {
		errorPage(w, http.StatusServiceUnavailable, lr)
		return
	}
	act := &rt.def
	if len(rt.rules) > 0 {
		ri := &reqInfo{path: r.URL.Path, host: r.Host, method: r.Method, header: r.Header.Values}
		if h, _, err := net.SplitHostPort(ri.host); err == nil {
			ri.host = h
		}
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			ri.source = ap.Addr()
		}
	rules:
		for i := range rt.rules {
			for j := range rt.rules[i].conds {
				if !rt.rules[i].conds[j].match(ri) {
					continue rules
				}
			}
			act = &rt.rules[i].action
			break
		}
	}
	if f := act.fixed; f != nil {
		fixedPage(w, f, lr)
		return
	}
	pl := act.pool()
	if pl == nil {
		errorPage(w, http.StatusServiceUnavailable, lr)
		return
	}
	t := pl.pick(nil)
	if t == nil {
		errorPage(w, http.StatusServiceUnavailable, lr)
		return
	}
	pl.requests.Add(1)
	t.inflight.Add(1)
	defer t.inflight.Add(-1)
	ctx := context.WithValue(r.Context(), pickKey{}, &pickState{pool: pl, target: t, port: l.port, opts: l.opts.Load(), resp: lr})
	l.p.proxy.ServeHTTP(w, r.WithContext(ctx))
}

func fixedPage(w http.ResponseWriter, f *fixedResponse, lr *listenerResponse) {
	code, _ := strconv.Atoi(f.StatusCode)
	ct := f.ContentType
	if ct == "" {
		ct = "text/plain"
	}
	w.Header().Set("Content-Type", ct+"; charset=utf-8")
	lr.apply(w.Header(), true)
	w.Header().Set("Content-Length", strconv.Itoa(len(f.MessageBody)))
	w.WriteHeader(code)
	io.WriteString(w, f.MessageBody)
}

func errorPage(w http.ResponseWriter, code int, lr *listenerResponse) {
	w.Header().Set("Content-Type", "text/html")
	lr.apply(w.Header(), true)
	w.WriteHeader(code)
	fmt.Fprintf(w, "<html>\r\n<head><title>%d %s</title></head>\r\n<body>\r\n<center><h1>%d %s</h1></center>\r\n</body>\r\n</html>\r\n",
		code, http.StatusText(code), code, http.StatusText(code))
}

// retryTransport sends a request that failed to reach its target (the task
// went away between health checks) to another healthy target, when the
// request has no body to replay and is idempotent.
type retryTransport struct{ base http.RoundTripper }

func (rt *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ps, _ := req.Context().Value(pickKey{}).(*pickState)
	tried := []*target{}
	if ps != nil {
		tried = append(tried, ps.target)
	}
	for {
		resp, err := rt.base.RoundTrip(req)
		if err == nil || ps == nil || !replayable(req, err) || len(tried) >= 4 {
			return resp, err
		}
		cur := tried[len(tried)-1]
		cur.mu.Lock()
		cur.dialFailed = true
		cur.mu.Unlock()
		next := ps.pool.pick(tried)
		if next == nil {
			return resp, err
		}
		tried = append(tried, next)
		req = req.Clone(req.Context())
		req.URL.Host = next.addr
	}
}

// targetErrorStatus is what an ALB answers when its target failed: 504
// when the target did not answer in time (connect or idle timeout), 502
// when it refused, reset or closed the connection or sent no valid HTTP.
func targetErrorStatus(err error) int {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) {
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

func replayable(req *http.Request, err error) bool {
	if req.Context().Err() != nil {
		return false
	}
	if req.Body != nil && req.Body != http.NoBody {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	// A target that took the request and then said nothing until the idle
	// timeout may be working on it still: an ALB answers 504 and so does
	// the proxy, rather than sending it again to another target and
	// making the client wait a timeout per target.
	if targetErrorStatus(err) == http.StatusGatewayTimeout {
		return false
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return true
	}
	return false
}

// SyncServiceTargets makes the targets an ECS service registered exactly
// want: missing ones are registered, the rest of its targets drain. It
// returns how many targets it registered in each target group, counted
// from what was stored, so the service's events say what happened.
func (s *Service) SyncServiceTargets(ctx context.Context, serviceARN string, want []ecs.ServiceTarget) map[string]int {
	if s.plane == nil {
		return nil
	}
	wantSet := map[string]bool{}
	for _, t := range want {
		wantSet[t.TargetGroupARN+"|"+net.JoinHostPort(t.IP, strconv.Itoa(int(t.Port)))] = true
	}
	s.plane.mu.Lock()
	have := s.plane.owned[serviceARN]
	same := len(have) == len(wantSet)
	for k := range wantSet {
		same = same && have[k]
	}
	s.plane.mu.Unlock()
	if same {
		return nil
	}
	// arn:aws:ecs:REGION:ACCOUNT:service/...
	parts := strings.SplitN(serviceARN, ":", 6)
	if len(parts) < 6 {
		return nil
	}
	prefix := arnPrefix(parts[4], parts[3]) + "targetgroup/"
	var registered map[string]int
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		registered = map[string]int{}
		gs, err := state.List[tgRecord](tx, kindTG, prefix)
		if err != nil {
			return err
		}
		now := time.Now()
		for i := range gs {
			g := &gs[i]
			changed := false
			for _, t := range want {
				if t.TargetGroupARN == g.ARN && g.register(t.IP, t.Port, serviceARN) {
					changed = true
					registered[g.ARN]++
				}
			}
			for _, tr := range slices.Clone(g.Targets) {
				key := g.ARN + "|" + net.JoinHostPort(tr.ID, strconv.Itoa(int(tr.Port)))
				if tr.Owner == serviceARN && !wantSet[key] && g.deregister(tr.ID, tr.Port, now) {
					changed = true
				}
			}
			if changed {
				if err := tx.Put(kindTG, g.ARN, g); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		s.logger().Warn("load balancers: register service targets", "service", serviceARN, "err", err)
		return nil
	}
	s.changed()
	return registered
}

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }
