package iam

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/state"
)

const stsNS = "https://sts.amazonaws.com/doc/2011-06-15/"

// STS is the STS Query API (signing name sts).
type STS struct{ Store *Store }

func parseForm(body []byte) (form, error) {
	v, err := url.ParseQuery(string(body))
	return form(v), err
}

func (s *STS) WriteError(w http.ResponseWriter, e *awsapi.Error) { writeQueryError(w, stsNS, e) }

func (s *STS) ServeQuery(w http.ResponseWriter, r *http.Request, f map[string][]string) {
	id := awsapi.IdentityFrom(r.Context())
	action := form(f).get("Action")
	var out any
	var err error
	switch action {
	case "GetCallerIdentity":
		arn, uid := id.ARN, id.UserID
		if arn == "" {
			arn, uid = "arn:aws:iam::"+id.Account+":root", id.Account
		}
		out = struct{ UserId, Account, Arn string }{uid, id.Account, arn}
	case "AssumeRole":
		out, err = s.assumeRole(r, id, form(f))
	default:
		err = awsapi.Errorf("InvalidAction", "Could not find operation %s for version %s", action, form(f).get("Version"))
	}
	if err != nil {
		s.WriteError(w, awsapi.AsError(err))
		return
	}
	writeResult(w, stsNS, action, out)
}

var (
	roleARNRe     = regexp.MustCompile(`^arn:aws:iam::([0-9]{12}):role/(?:[\x21-\x7E]*/)?([\w+=,.@-]{1,64})$`)
	sessionNameRe = regexp.MustCompile(`^[\w+=,.@-]{2,64}$`)
)

func (s *STS) assumeRole(r *http.Request, id *awsapi.Identity, f form) (any, error) {
	roleARN, name := f.get("RoleArn"), f.get("RoleSessionName")
	m := roleARNRe.FindStringSubmatch(roleARN)
	if m == nil {
		return nil, validation("1 validation error detected: Value '%s' at 'roleArn' failed to satisfy constraint: Member must be a role ARN", roleARN)
	}
	if !sessionNameRe.MatchString(name) {
		return nil, validation("1 validation error detected: Value '%s' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*", name)
	}
	caller := id.ARN
	if caller == "" {
		caller = "arn:aws:iam::" + id.Account + ":root"
	}
	denied := &awsapi.Error{Code: "AccessDenied", Status: http.StatusForbidden,
		Message: "User: " + caller + " is not authorized to perform: sts:AssumeRole on resource: " + roleARN}
	ro, err := s.Store.GetRole(r.Context(), m[1], m[2])
	if err != nil {
		if e := awsapi.AsError(err); e.Code == "NoSuchEntity" {
			return nil, denied // AWS does not tell a stranger whether a role exists
		}
		return nil, err
	}
	if ro.ARN() != roleARN {
		return nil, denied
	}
	trust, err := ParsePolicy(ro.AssumeRolePolicy, true)
	if err != nil || !trust.Trusts("AWS", caller, id.Account, "sts:AssumeRole", RequestContext(r, id)) {
		return nil, denied
	}
	dur := 3600
	if v := f.get("DurationSeconds"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 900 || n > 43200 {
			return nil, validation("1 validation error detected: Value '%s' at 'durationSeconds' failed to satisfy constraint: Member must have value between 900 and 43200", v)
		}
		if n > ro.MaxSessionDuration {
			return nil, validation("The requested DurationSeconds exceeds the MaxSessionDuration set for this role.")
		}
		dur = n
	}
	sess, secret, token, err := s.Store.newSession(r.Context(), ro, name, time.Duration(dur)*time.Second)
	if err != nil {
		return nil, err
	}
	keyID := sess.KeyID
	type creds struct{ AccessKeyId, SecretAccessKey, SessionToken, Expiration string }
	type user struct{ AssumedRoleId, Arn string }
	return struct {
		Credentials     creds
		AssumedRoleUser user
	}{creds{keyID, secret, token, isoTime(sess.Expires)},
		user{ro.ID + ":" + name, "arn:aws:sts::" + ro.Account + ":assumed-role/" + ro.Name + "/" + name}}, nil
}

// newSession stores temporary credentials for a role and returns them.
func (s *Store) newSession(ctx context.Context, ro *Role, name string, ttl time.Duration) (*Session, string, string, error) {
	keyID := "ASIA" + randomString(16, upper32)
	secret := randomString(40, b64ish)
	token := "FwoG" + randomString(300, b64ish)
	sess := &Session{KeyID: keyID, Account: ro.Account, Role: ro.Name, RoleID: ro.ID, Name: name,
		Sealed: s.Sealer.Seal(secret, keyID), SealedToken: s.Sealer.Seal(token, keyID+"/token"),
		Expires: s.now().Add(ttl)}
	err := s.State.Update(ctx, func(tx state.Tx) error {
		pruneSessions(tx, s.now())
		return tx.Put(kindSession, keyID, sess)
	})
	return sess, secret, token, err
}

// pruneSessions drops sessions that expired more than a day ago (kept a
// while so their use still reports ExpiredToken rather than an unknown key).
func pruneSessions(tx state.Tx, now time.Time) {
	var old []string
	tx.Scan(kindSession, "", "", 0, func(key string, b []byte) error {
		if i := strings.Index(string(b), `"expires":"`); i >= 0 {
			rest := string(b)[i+len(`"expires":"`):]
			if t, err := time.Parse(time.RFC3339Nano, rest[:strings.IndexByte(rest, '"')]); err == nil && now.Sub(t) > 24*time.Hour {
				old = append(old, key)
			}
		}
		return nil
	})
	for _, k := range old {
		tx.Delete(kindSession, k)
	}
}
