// Package iam is Gantry's identity layer: accounts and their access keys,
// IAM users and roles with inline policies, STS, and the policy evaluator
// the API router consults on every call. Everything lives in the state
// store, so keys created or revoked by `gantry keys` (another process on
// the same data directory) take effect on the server's next request.
package iam

import (
	"context"
	"crypto/rand"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/state"
)

// State kinds.
const (
	kindAccount = "iam.account" // key: account id
	kindKey     = "iam.key"     // key: access key id
	kindUser    = "iam.user"    // key: account/lower(name)
	kindRole    = "iam.role"    // key: account/lower(name)
	kindSession = "iam.session" // key: temporary access key id
)

// Account is one tenant: every resource key starts with its id.
type Account struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
}

// AccessKey is a long-term key of an account's root (User "") or of a user.
// The secret is sealed (AES-GCM) with the data directory's key file.
type AccessKey struct {
	ID      string    `json:"id"`
	Account string    `json:"account"`
	User    string    `json:"user,omitempty"`
	Sealed  string    `json:"sealedSecret"`
	Status  string    `json:"status"`
	Created time.Time `json:"created"`
}

// User is an IAM user with inline policies (name -> JSON document).
type User struct {
	Account  string            `json:"account"`
	Name     string            `json:"name"`
	ID       string            `json:"id"`
	Path     string            `json:"path"`
	Created  time.Time         `json:"created"`
	Policies map[string]string `json:"policies,omitempty"`
}

func (u *User) ARN() string { return "arn:aws:iam::" + u.Account + ":user" + u.Path + u.Name }

// Role is an IAM role: a trust (assume-role) policy and inline policies.
type Role struct {
	Account            string            `json:"account"`
	Name               string            `json:"name"`
	ID                 string            `json:"id"`
	Path               string            `json:"path"`
	Description        string            `json:"description,omitempty"`
	AssumeRolePolicy   string            `json:"assumeRolePolicy"`
	MaxSessionDuration int               `json:"maxSessionDuration"`
	Created            time.Time         `json:"created"`
	Policies           map[string]string `json:"policies,omitempty"`
}

func (r *Role) ARN() string { return "arn:aws:iam::" + r.Account + ":role" + r.Path + r.Name }

// Session is a set of temporary credentials from AssumeRole.
type Session struct {
	KeyID       string    `json:"keyId"`
	Account     string    `json:"account"`
	Role        string    `json:"role"`
	RoleID      string    `json:"roleId"`
	Name        string    `json:"name"`
	Sealed      string    `json:"sealedSecret"`
	SealedToken string    `json:"sealedToken"`
	Expires     time.Time `json:"expires"`
}

// Store keeps identities in the state store.
type Store struct {
	State  state.Store
	Sealer *Sealer
	Now    func() time.Time
}

func (s *Store) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now().UTC()
}

var (
	accountIDRe   = regexp.MustCompile(`^[0-9]{12}$`)
	accountNameRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$`)
	keyIDRe       = regexp.MustCompile(`^[A-Z0-9]{16,128}$`)
)

const (
	upper32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	b64ish  = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
)

func randomString(n int, alphabet string) string {
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

func randomDigits(n int) string { return randomString(n, "0123456789") }

// CreateAccount adds an account; id "" picks a random 12-digit id.
func (s *Store) CreateAccount(ctx context.Context, name, id string) (*Account, error) {
	if !accountNameRe.MatchString(name) {
		return nil, fmt.Errorf("account name %q: use 1-64 letters, digits, '.', '_' or '-'", name)
	}
	if id == "" {
		id = randomDigits(12)
	} else if !accountIDRe.MatchString(id) {
		return nil, fmt.Errorf("account id %q: want 12 digits", id)
	}
	a := &Account{ID: id, Name: name, Created: s.now()}
	err := s.State.Update(ctx, func(tx state.Tx) error {
		all, err := state.List[Account](tx, kindAccount, "")
		if err != nil {
			return err
		}
		for _, o := range all {
			if o.ID == id {
				return fmt.Errorf("account id %s is taken (by %q)", id, o.Name)
			}
			if strings.EqualFold(o.Name, name) {
				return fmt.Errorf("an account named %q exists (id %s)", o.Name, o.ID)
			}
		}
		return tx.Put(kindAccount, id, a)
	})
	return a, err
}

// Accounts lists every account by id.
func (s *Store) Accounts(ctx context.Context) (out []Account, err error) {
	err = s.State.View(ctx, func(tx state.Tx) error {
		out, err = state.List[Account](tx, kindAccount, "")
		return err
	})
	return out, err
}

// FindAccount finds an account by name or id.
func (s *Store) FindAccount(ctx context.Context, nameOrID string) (*Account, error) {
	all, err := s.Accounts(ctx)
	if err != nil {
		return nil, err
	}
	for _, a := range all {
		if a.ID == nameOrID || strings.EqualFold(a.Name, nameOrID) {
			return &a, nil
		}
	}
	return nil, fmt.Errorf("no account named %q (gantry accounts ls lists them)", nameOrID)
}

// CreateKey makes a new key pair for an account's root (user "") or user.
func (s *Store) CreateKey(ctx context.Context, account, user string) (*AccessKey, string, error) {
	id := "AKIA" + randomString(16, upper32)
	secret := randomString(40, b64ish)
	k, err := s.putKey(ctx, account, user, id, secret)
	return k, secret, err
}

// ImportKey stores an existing key pair (moved from elsewhere) for a root.
func (s *Store) ImportKey(ctx context.Context, account, id, secret string) (*AccessKey, error) {
	if !keyIDRe.MatchString(id) {
		return nil, fmt.Errorf("access key id %q: want 16-128 upper-case letters and digits", id)
	}
	if len(secret) < 16 || len(secret) > 128 {
		return nil, fmt.Errorf("secret access key: want 16-128 characters")
	}
	return s.putKey(ctx, account, "", id, secret)
}

func (s *Store) putKey(ctx context.Context, account, user, id, secret string) (*AccessKey, error) {
	k := &AccessKey{ID: id, Account: account, User: user, Sealed: s.Sealer.Seal(secret, id), Status: "Active", Created: s.now()}
	err := s.State.Update(ctx, func(tx state.Tx) error {
		var a Account
		if ok, err := tx.Get(kindAccount, account, &a); err != nil || !ok {
			if err == nil {
				err = fmt.Errorf("no account %s", account)
			}
			return err
		}
		if ok, err := tx.Get(kindKey, id, &AccessKey{}); err != nil || ok {
			if err == nil {
				err = awsapi.Errorf("EntityAlreadyExists", "Access key %s exists.", id)
			}
			return err
		}
		if user != "" {
			var u User
			if ok, err := tx.Get(kindUser, account+"/"+strings.ToLower(user), &u); err != nil || !ok {
				if err == nil {
					err = noSuchUser(user)
				}
				return err
			}
			n := 0
			if err := tx.Scan(kindKey, "", "", 0, func(_ string, b []byte) error {
				if strings.Contains(string(b), `"account":"`+account+`"`) && strings.Contains(string(b), `"user":"`+u.Name+`"`) {
					n++
				}
				return nil
			}); err != nil {
				return err
			}
			if n >= 2 {
				return awsapi.Errorf("LimitExceeded", "Cannot exceed quota for AccessKeysPerUser: 2")
			}
			k.User = u.Name
		}
		return tx.Put(kindKey, id, k)
	})
	if err != nil {
		return nil, err
	}
	return k, nil
}

// Keys lists an account's keys ("" : all accounts); user filters when set.
func (s *Store) Keys(ctx context.Context, account string, user *string) ([]AccessKey, error) {
	var out []AccessKey
	err := s.State.View(ctx, func(tx state.Tx) error {
		all, err := state.List[AccessKey](tx, kindKey, "")
		for _, k := range all {
			if (account == "" || k.Account == account) && (user == nil || strings.EqualFold(k.User, *user)) {
				out = append(out, k)
			}
		}
		return err
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, err
}

// RevokeKey deletes a key; requests signed with it fail from then on.
// account "" matches any account.
func (s *Store) RevokeKey(ctx context.Context, account, id string) error {
	return s.State.Update(ctx, func(tx state.Tx) error {
		var k AccessKey
		ok, err := tx.Get(kindKey, id, &k)
		if err != nil {
			return err
		}
		if !ok || (account != "" && k.Account != account) {
			return awsapi.Errorf("NoSuchEntity", "The Access Key with id %s cannot be found.", id)
		}
		_, err = tx.Delete(kindKey, id)
		return err
	})
}

// Secret decrypts a key's secret.
func (s *Store) Secret(k *AccessKey) (string, error) { return s.Sealer.Open(k.Sealed, k.ID) }

// Bootstrap makes sure the default account exists and, on an install from
// before accounts (credentials.json only), imports its key pair once.
func (s *Store) Bootstrap(ctx context.Context, accountID, keyID, secret string) error {
	var exists bool
	if err := s.State.View(ctx, func(tx state.Tx) error {
		var err error
		exists, err = tx.Get(kindAccount, accountID, &Account{})
		return err
	}); err != nil || exists {
		return err
	}
	if _, err := s.CreateAccount(ctx, "default", accountID); err != nil {
		return err
	}
	_, err := s.putKey(ctx, accountID, "", keyID, secret)
	return err
}

// LookupKey implements awsapi.KeyStore.
func (s *Store) LookupKey(id string) (string, string, bool) {
	p, ok := s.LookupPrincipal(id)
	if p.SessionToken != "" {
		return "", "", false // needs the token check of LookupPrincipal's callers
	}
	return p.Secret, p.Account, ok
}

// LookupPrincipal implements awsapi.PrincipalStore: one read of the state
// store per request, so revocations apply at once.
func (s *Store) LookupPrincipal(id string) (awsapi.Principal, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var p awsapi.Principal
	found := false
	err := s.State.View(ctx, func(tx state.Tx) error {
		if strings.HasPrefix(id, "ASIA") {
			var sess Session
			ok, err := tx.Get(kindSession, id, &sess)
			if err != nil || !ok {
				return err
			}
			secret, err1 := s.Sealer.Open(sess.Sealed, id)
			token, err2 := s.Sealer.Open(sess.SealedToken, id+"/token")
			if err1 != nil || err2 != nil {
				return nil
			}
			p = awsapi.Principal{Secret: secret, Account: sess.Account, SessionToken: token,
				ARN:     "arn:aws:sts::" + sess.Account + ":assumed-role/" + sess.Role + "/" + sess.Name,
				UserID:  sess.RoleID + ":" + sess.Name,
				Expired: !s.now().Before(sess.Expires)}
			found = true
			return nil
		}
		var k AccessKey
		ok, err := tx.Get(kindKey, id, &k)
		if err != nil || !ok || k.Status != "Active" {
			return err
		}
		secret, err := s.Sealer.Open(k.Sealed, k.ID)
		if err != nil {
			return nil
		}
		p = awsapi.Principal{Secret: secret, Account: k.Account, ARN: "arn:aws:iam::" + k.Account + ":root", UserID: k.Account}
		if k.User != "" {
			var u User
			if ok, err := tx.Get(kindUser, k.Account+"/"+strings.ToLower(k.User), &u); err != nil || !ok {
				return err
			}
			p.ARN, p.UserID = u.ARN(), u.ID
		}
		found = true
		return nil
	})
	return p, found && err == nil
}

func noSuchUser(name string) error {
	return &awsapi.Error{Code: "NoSuchEntity", Message: "The user with name " + name + " cannot be found.", Status: 404}
}

func noSuchRole(name string) error {
	return &awsapi.Error{Code: "NoSuchEntity", Message: "The role with name " + name + " cannot be found.", Status: 404}
}
