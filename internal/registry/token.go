package registry

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// TokenTTL is how long an ECR authorization token is valid, as on AWS.
const TokenTTL = 12 * time.Hour

// Tokens issues and checks the registry passwords GetAuthorizationToken
// hands out. A token is its expiry signed with a key derived from the
// account's secret key: nothing to store, valid across restarts, and
// worthless once expired.
type Tokens struct {
	key []byte
}

// NewTokens derives the signing key from secret (the account's secret
// access key), so rotating that key revokes every token.
func NewTokens(secret string) *Tokens {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("gantry ecr registry token v1"))
	return &Tokens{key: m.Sum(nil)}
}

// Issue returns a token valid until exp.
func (t *Tokens) Issue(exp time.Time) string {
	payload := "v1." + strconv.FormatInt(exp.Unix(), 10)
	return payload + "." + t.sign(payload)
}

// Check reports why a token is not valid at now, or nil.
func (t *Tokens) Check(token string, now time.Time) error {
	i := strings.LastIndexByte(token, '.')
	if i < 0 {
		return fmt.Errorf("malformed token")
	}
	payload, sig := token[:i], token[i+1:]
	if !hmac.Equal([]byte(sig), []byte(t.sign(payload))) {
		return fmt.Errorf("invalid token")
	}
	exp, err := strconv.ParseInt(strings.TrimPrefix(payload, "v1."), 10, 64)
	if err != nil {
		return fmt.Errorf("malformed token")
	}
	if now.Unix() >= exp {
		return fmt.Errorf("token expired at %s; get a new one with aws ecr get-login-password", time.Unix(exp, 0).UTC().Format(time.RFC3339))
	}
	return nil
}

func (t *Tokens) sign(payload string) string {
	m := hmac.New(sha256.New, t.key)
	m.Write([]byte(payload))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}
