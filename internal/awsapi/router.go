package awsapi

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// MaxBody bounds a request body; AWS's JSON APIs cap requests well below it.
const MaxBody = 16 << 20

// Router is Gantry's one AWS endpoint: it verifies SigV4 on every request and
// routes JSON 1.1 calls by X-Amz-Target and Query calls by the credential
// scope's service, as aws-wire.md describes.
type Router struct {
	Keys  KeyStore
	JSON  map[string]*JSONService // by target prefix
	Query map[string]QueryService // by signing name
	// REST holds rest-json services by signing name (EFS's
	// elasticfilesystem): a request signed for one whose path starts with
	// its PathPrefix goes to it.
	REST map[string]RESTService
	Log  *slog.Logger
	Now  func() time.Time
	// Observe, if set, hears of every answered request: its service
	// (target prefix or signing name), operation, HTTP status and time
	// taken. Metrics hang here.
	Observe func(service, operation string, status int, elapsed time.Duration)
	// Authorize, if set, decides every verified request before it is
	// served: action is "prefix:Operation" (the IAM service prefix from
	// ActionPrefix for JSON services, the signing name for Query ones) and
	// body the raw request body, for a best-effort resource. A non-nil
	// error is written back in the service's own error format.
	Authorize func(r *http.Request, id *Identity, action string, body []byte) *Error
	// ActionPrefix maps a JSON target prefix to its IAM service prefix
	// (AmazonEC2ContainerServiceV20141113 -> ecs).
	ActionPrefix map[string]string
}

func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if rt.Observe != nil {
		rt.observed(w, r)
		return
	}
	rt.serve(w, r)
}

func (rt *Router) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Amzn-RequestId", newRequestID())
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	if err != nil {
		WriteJSONError(w, Errorf("SerializationException", "could not read request body: %v", err))
		return
	}
	if len(body) > MaxBody {
		WriteJSONError(w, &Error{Code: "RequestEntityTooLargeException", Message: "Request body is too large.", Status: http.StatusRequestEntityTooLarge})
		return
	}
	target := r.Header.Get("X-Amz-Target")
	if rs := rt.restService(r, target); rs != nil {
		id, aerr := Verify(r, body, rt.Keys, rt.now())
		if aerr != nil {
			rs.WriteError(w, aerr)
			return
		}
		r = r.WithContext(WithIdentity(r.Context(), id))
		if rt.Authorize != nil {
			if op := rs.Operation(r); op != "" {
				if aerr := rt.Authorize(r, id, scopeService(r.Header.Get("Authorization"))+":"+op, body); aerr != nil {
					rs.WriteError(w, aerr)
					return
				}
			}
		}
		rs.ServeREST(w, r, body)
		return
	}
	var qs QueryService
	if target == "" {
		qs = rt.Query[scopeService(r.Header.Get("Authorization"))]
		if qs == nil && isQueryRequest(r) {
			// Unsigned or badly signed, so no scope names the service; the
			// client still expects an XML error it can parse.
			qs = rt.anyQuery(r, body)
		}
		if qs == nil {
			WriteJSONError(w, Errorf("UnknownOperationException", "No service on this endpoint answers this request; JSON services need X-Amz-Target."))
			return
		}
	}
	now := time.Now
	if rt.Now != nil {
		now = rt.Now
	}
	id, aerr := Verify(r, body, rt.Keys, now())
	if aerr != nil {
		if qs != nil {
			qs.WriteError(w, aerr)
		} else {
			WriteJSONError(w, aerr)
		}
		return
	}
	r = r.WithContext(WithIdentity(r.Context(), id))
	if qs != nil {
		if r.Method != http.MethodPost && r.Method != http.MethodGet {
			qs.WriteError(w, Errorf("InvalidAction", "Query requests are POST or GET"))
			return
		}
		form, err := url.ParseQuery(string(body))
		if err != nil {
			qs.WriteError(w, Errorf("MalformedQueryString", "%v", err))
			return
		}
		for k, v := range r.URL.Query() {
			form[k] = append(form[k], v...)
		}
		if rt.Authorize != nil {
			action := ""
			if a := form["Action"]; len(a) > 0 {
				action = a[0]
			}
			if aerr := rt.Authorize(r, id, scopeService(r.Header.Get("Authorization"))+":"+action, body); aerr != nil {
				qs.WriteError(w, aerr)
				return
			}
		}
		qs.ServeQuery(w, r, form)
		return
	}
	prefix, op, _ := strings.Cut(target, ".")
	svc := rt.JSON[prefix]
	if svc == nil || r.Method != http.MethodPost {
		WriteJSONError(w, Errorf("UnknownOperationException", "Unknown target %q.", target))
		return
	}
	if rt.Authorize != nil {
		if _, known := svc.Ops[op]; known {
			name := rt.ActionPrefix[prefix]
			if name == "" {
				name = id.Service
			}
			if aerr := rt.Authorize(r, id, name+":"+op, body); aerr != nil {
				WriteJSONError(w, aerr)
				return
			}
		}
	}
	svc.ServeJSON(w, r, op, body)
}

// observed serves r and reports it to Observe. Operation names come from
// the request, so they are kept only when a service knows them (JSON) or
// the request passed SigV4 (Query): a stranger cannot mint label values.
func (rt *Router) observed(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	if err != nil {
		WriteJSONError(w, Errorf("SerializationException", "could not read request body: %v", err))
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	rt.serve(sw, r)
	service, op := "unknown", "unknown"
	if target := r.Header.Get("X-Amz-Target"); target != "" {
		prefix, name, _ := strings.Cut(target, ".")
		if svc := rt.JSON[prefix]; svc != nil {
			service = prefix
			if _, ok := svc.Ops[name]; ok {
				op = name
			}
		}
	} else if rs := rt.restService(r, ""); rs != nil {
		service = scopeService(r.Header.Get("Authorization"))
		if rt.REST[service] != rs {
			service = "unknown"
		} else if sw.status != http.StatusForbidden && sw.status != http.StatusUnauthorized {
			if name := rs.Operation(r); name != "" {
				op = name
			}
		}
	} else if name := scopeService(r.Header.Get("Authorization")); rt.Query[name] != nil {
		service = name
		if sw.status != http.StatusForbidden && sw.status != http.StatusUnauthorized {
			action := r.URL.Query().Get("Action")
			if form, err := url.ParseQuery(string(body)); err == nil && form.Get("Action") != "" {
				action = form.Get("Action")
			}
			if len(action) > 0 && len(action) <= 64 {
				op = action
			}
		}
	}
	rt.Observe(service, op, sw.status, time.Since(start))
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// RESTService is a rest-json service: operations named by method and path.
type RESTService interface {
	// PathPrefix is where the service's paths start (EFS: /2015-02-01/).
	PathPrefix() string
	// Operation names the operation a request's method and path select,
	// or "" when none does.
	Operation(r *http.Request) string
	// ServeREST answers one verified request.
	ServeREST(w http.ResponseWriter, r *http.Request, body []byte)
	// WriteError writes e in the service's error format.
	WriteError(w http.ResponseWriter, e *Error)
}

// restService picks the rest-json service for a request without
// X-Amz-Target: the one its credential scope names, if the path is that
// service's; else, for requests no valid scope attributes, the one whose
// path prefix matches, so that errors come back in its format.
func (rt *Router) restService(r *http.Request, target string) RESTService {
	if target != "" || len(rt.REST) == 0 {
		return nil
	}
	if rs := rt.REST[scopeService(r.Header.Get("Authorization"))]; rs != nil && strings.HasPrefix(r.URL.Path, rs.PathPrefix()) {
		return rs
	}
	for name, rs := range rt.REST {
		if rt.Query[scopeService(r.Header.Get("Authorization"))] == nil && name != "" && strings.HasPrefix(r.URL.Path, rs.PathPrefix()) {
			return rs
		}
	}
	return nil
}

func (rt *Router) now() time.Time {
	if rt.Now != nil {
		return rt.Now()
	}
	return time.Now()
}

// isQueryRequest tells a Query-protocol request by its form body or, for GET,
// its Action parameter.
func isQueryRequest(r *http.Request) bool {
	ct := strings.ToLower(r.Header.Get("Content-Type"))
	return strings.HasPrefix(ct, "application/x-www-form-urlencoded") || r.URL.Query().Get("Action") != ""
}

// queryVersions maps each Query service's API version, which every request
// carries, to its signing name.
var queryVersions = map[string]string{
	"2016-11-15": "ec2",
	"2010-05-08": "iam",
	"2011-06-15": "sts",
	"2015-12-01": "elasticloadbalancing",
	"2010-08-01": "monitoring",
}

// anyQuery picks the service that answers a Query request no credential
// scope names (unsigned or badly signed), so its error comes in that
// service's XML: by the request's API version, else the only Query service,
// else a generic XML writer.
func (rt *Router) anyQuery(r *http.Request, body []byte) QueryService {
	version := r.URL.Query().Get("Version")
	if form, err := url.ParseQuery(string(body)); err == nil && form.Get("Version") != "" {
		version = form.Get("Version")
	}
	if qs := rt.Query[queryVersions[version]]; qs != nil {
		return qs
	}
	if len(rt.Query) == 1 {
		for _, qs := range rt.Query {
			return qs
		}
	}
	return genericQuery{}
}

// genericQuery writes errors in the standard Query error XML, which
// botocore's query and ec2 parsers both read.
type genericQuery struct{}

func (genericQuery) ServeQuery(w http.ResponseWriter, r *http.Request, form map[string][]string) {
	genericQuery{}.WriteError(w, Errorf("InvalidAction", "No service on this endpoint answers this request."))
}

func (genericQuery) WriteError(w http.ResponseWriter, e *Error) {
	type xmlError struct {
		Type    string
		Code    string
		Message string
	}
	status, typ := e.Status, "Sender"
	if status == 0 {
		status = http.StatusBadRequest
	}
	if status >= 500 {
		typ = "Receiver"
	}
	WriteXML(w, status, struct {
		XMLName   xml.Name `xml:"ErrorResponse"`
		Error     xmlError
		RequestId string
	}{Error: xmlError{typ, strings.TrimSuffix(e.Code, "Exception"), e.Message}, RequestId: w.Header().Get("X-Amzn-RequestId")})
}

// scopeService reads the service from an Authorization header's credential
// scope without verifying it (Verify does that next).
func scopeService(auth string) string {
	i := strings.Index(auth, "Credential=")
	if i < 0 {
		return ""
	}
	cred := auth[i+len("Credential="):]
	if j := strings.IndexAny(cred, ", "); j >= 0 {
		cred = cred[:j]
	}
	parts := strings.Split(cred, "/")
	if len(parts) != 5 {
		return ""
	}
	return parts[3]
}

func newRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	s := hex.EncodeToString(b[:])
	return s[:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:]
}
