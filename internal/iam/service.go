package iam

import (
	"context"
	"encoding/xml"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/state"
)

const iamNS = "https://iam.amazonaws.com/doc/2010-05-08/"

// Service is the IAM Query API (signing name iam).
type Service struct{ Store *Store }

type form map[string][]string

func (f form) get(k string) string {
	if v := f[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// elem marshals v as an element named name.
type elem struct {
	name string
	v    any
}

func (e elem) MarshalXML(enc *xml.Encoder, start xml.StartElement) error {
	start.Name = xml.Name{Local: e.name}
	return enc.EncodeElement(e.v, start)
}

// writeResult writes a Query response envelope: <ActionResponse
// xmlns=ns><ActionResult>result</ActionResult><ResponseMetadata>...
func writeResult(w http.ResponseWriter, ns, action string, result any) {
	type meta struct{ RequestId string }
	env := struct {
		XMLName          xml.Name
		Xmlns            string `xml:"xmlns,attr"`
		Result           *elem
		ResponseMetadata meta
	}{XMLName: xml.Name{Local: action + "Response"}, Xmlns: ns, ResponseMetadata: meta{w.Header().Get("X-Amzn-RequestId")}}
	if result != nil {
		env.Result = &elem{action + "Result", result}
	}
	awsapi.WriteXML(w, http.StatusOK, env)
}

// writeQueryError writes the standard Query error XML with IAM/STS codes.
func writeQueryError(w http.ResponseWriter, ns string, e *awsapi.Error) {
	code, status := e.Code, e.Status
	switch code {
	case awsapi.CodeUnknownKey:
		code = "InvalidClientTokenId"
	case awsapi.CodeBadSignature:
		code = "SignatureDoesNotMatch"
	case awsapi.CodeMissingAuth, awsapi.CodeIncomplete, "ExpiredTokenException":
		code = strings.TrimSuffix(code, "Exception")
	case "ServerException":
		code = "ServiceFailure"
	}
	if status == 0 {
		status = http.StatusBadRequest
	}
	switch code {
	case "NoSuchEntity":
		status = http.StatusNotFound
	case "EntityAlreadyExists", "DeleteConflict", "LimitExceeded":
		status = http.StatusConflict
	case "AccessDenied":
		status = http.StatusForbidden
	}
	typ := "Sender"
	if status >= 500 {
		typ = "Receiver"
	}
	type xmlError struct{ Type, Code, Message string }
	awsapi.WriteXML(w, status, struct {
		XMLName   xml.Name `xml:"ErrorResponse"`
		Xmlns     string   `xml:"xmlns,attr"`
		Error     xmlError
		RequestId string
	}{Xmlns: ns, Error: xmlError{typ, code, e.Message}, RequestId: w.Header().Get("X-Amzn-RequestId")})
}

func (s *Service) WriteError(w http.ResponseWriter, e *awsapi.Error) { writeQueryError(w, iamNS, e) }

func validation(format string, args ...any) *awsapi.Error {
	return awsapi.Errorf("ValidationError", format, args...)
}

var (
	nameRe       = regexp.MustCompile(`^[\w+=,.@-]{1,64}$`)
	policyNameRe = regexp.MustCompile(`^[\w+=,.@-]{1,128}$`)
	pathRe       = regexp.MustCompile(`^/([\x21-\x7E]*/)?$`)
)

func checkName(field, v string, re *regexp.Regexp) *awsapi.Error {
	if !re.MatchString(v) {
		return validation("1 validation error detected: Value '%s' at '%s' failed to satisfy constraint: Member must satisfy regular expression pattern: %s", v, field, re.String())
	}
	return nil
}

func isoTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

type userXML struct {
	Path, UserName, UserId, Arn, CreateDate string
}

func userOut(u *User) userXML {
	return userXML{u.Path, u.Name, u.ID, u.ARN(), isoTime(u.Created)}
}

type roleXML struct {
	Path, RoleName, RoleId, Arn, CreateDate string
	AssumeRolePolicyDocument                string
	Description                             string `xml:",omitempty"`
	MaxSessionDuration                      int
}

func roleOut(r *Role) roleXML {
	return roleXML{r.Path, r.Name, r.ID, r.ARN(), isoTime(r.Created), url.PathEscape(r.AssumeRolePolicy), r.Description, r.MaxSessionDuration}
}

type handler func(s *Service, r *http.Request, id *awsapi.Identity, f form) (any, error)

var iamOps = map[string]handler{
	"CreateUser": (*Service).createUser, "GetUser": (*Service).getUser, "ListUsers": (*Service).listUsers, "DeleteUser": (*Service).deleteUser,
	"CreateAccessKey": (*Service).createAccessKey, "ListAccessKeys": (*Service).listAccessKeys, "DeleteAccessKey": (*Service).deleteAccessKey,
	"PutUserPolicy": (*Service).putUserPolicy, "GetUserPolicy": (*Service).getUserPolicy, "ListUserPolicies": (*Service).listUserPolicies, "DeleteUserPolicy": (*Service).deleteUserPolicy,
	"CreateRole": (*Service).createRole, "GetRole": (*Service).getRole, "ListRoles": (*Service).listRoles, "DeleteRole": (*Service).deleteRole,
	"PutRolePolicy": (*Service).putRolePolicy, "GetRolePolicy": (*Service).getRolePolicy, "ListRolePolicies": (*Service).listRolePolicies, "DeleteRolePolicy": (*Service).deleteRolePolicy,
}

// noResult marks an operation with an empty result element.
type noResult struct{}

func (s *Service) ServeQuery(w http.ResponseWriter, r *http.Request, f map[string][]string) {
	action := form(f).get("Action")
	h, ok := iamOps[action]
	if !ok {
		s.WriteError(w, awsapi.Errorf("InvalidAction", "Could not find operation %s for version %s", action, form(f).get("Version")))
		return
	}
	out, err := h(s, r, awsapi.IdentityFrom(r.Context()), form(f))
	if err != nil {
		s.WriteError(w, awsapi.AsError(err))
		return
	}
	if _, empty := out.(noResult); empty {
		out = nil
	}
	writeResult(w, iamNS, action, out)
}

func userKey(account, name string) string { return account + "/" + strings.ToLower(name) }

func (s *Service) getUserTx(tx state.Tx, account, name string) (*User, error) {
	if e := checkName("userName", name, nameRe); e != nil {
		return nil, e
	}
	var u User
	ok, err := tx.Get(kindUser, userKey(account, name), &u)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, noSuchUser(name)
	}
	return &u, nil
}

func (s *Service) getRoleTx(tx state.Tx, account, name string) (*Role, error) {
	if e := checkName("roleName", name, nameRe); e != nil {
		return nil, e
	}
	var ro Role
	ok, err := tx.Get(kindRole, userKey(account, name), &ro)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, noSuchRole(name)
	}
	return &ro, nil
}

func pathParam(f form) (string, error) {
	p := f.get("Path")
	if p == "" {
		return "/", nil
	}
	if len(p) > 512 || !pathRe.MatchString(p) {
		return "", validation("The specified value for path is invalid. It must begin and end with / and contain only alphanumeric characters and/or / characters.")
	}
	return p, nil
}

func (s *Service) createUser(r *http.Request, id *awsapi.Identity, f form) (any, error) {
	name := f.get("UserName")
	if e := checkName("userName", name, nameRe); e != nil {
		return nil, e
	}
	path, err := pathParam(f)
	if err != nil {
		return nil, err
	}
	u := &User{Account: id.Account, Name: name, ID: "AIDA" + randomString(17, upper32), Path: path, Created: s.Store.now()}
	err = s.Store.State.Update(r.Context(), func(tx state.Tx) error {
		if ok, err := tx.Get(kindUser, userKey(id.Account, name), &User{}); err != nil || ok {
			if err == nil {
				err = &awsapi.Error{Code: "EntityAlreadyExists", Message: "User with name " + name + " already exists.", Status: 409}
			}
			return err
		}
		return tx.Put(kindUser, userKey(id.Account, name), u)
	})
	if err != nil {
		return nil, err
	}
	return struct{ User userXML }{userOut(u)}, nil
}

func (s *Service) getUser(r *http.Request, id *awsapi.Identity, f form) (any, error) {
	name := f.get("UserName")
	if name == "" {
		if id.ARN == "" || strings.HasSuffix(id.ARN, ":root") {
			return struct {
				User struct{ UserId, Arn, CreateDate string }
			}{struct{ UserId, Arn, CreateDate string }{id.Account, "arn:aws:iam::" + id.Account + ":root", isoTime(time.Unix(0, 0))}}, nil
		}
		if i := strings.LastIndex(id.ARN, "/"); strings.Contains(id.ARN, ":user/") && i >= 0 {
			name = id.ARN[i+1:]
		} else {
			return nil, validation("Must specify userName when calling with non-User credentials")
		}
	}
	var u *User
	err := s.Store.State.View(r.Context(), func(tx state.Tx) (err error) {
		u, err = s.getUserTx(tx, id.Account, name)
		return err
	})
	if err != nil {
		return nil, err
	}
	return struct{ User userXML }{userOut(u)}, nil
}

// page applies Marker/MaxItems to sorted names.
func page(f form, names []string) (out []string, marker string, truncated bool, err error) {
	max := 100
	if v := f.get("MaxItems"); v != "" {
		n, perr := strconv.Atoi(v)
		if perr != nil || n < 1 || n > 1000 {
			return nil, "", false, validation("1 validation error detected: Value '%s' at 'maxItems' failed to satisfy constraint: Member must have value between 1 and 1000", v)
		}
		max = n
	}
	start := 0
	if m := f.get("Marker"); m != "" {
		start = sort.SearchStrings(names, m)
		for start < len(names) && names[start] <= m {
			start++
		}
	}
	out = names[start:]
	if len(out) > max {
		out, truncated = out[:max], true
		marker = out[len(out)-1]
	}
	return out, marker, truncated, nil
}

type listPage struct {
	IsTruncated bool
	Marker      string `xml:",omitempty"`
}

func (s *Service) listUsers(r *http.Request, id *awsapi.Identity, f form) (any, error) {
	var users []User
	err := s.Store.State.View(r.Context(), func(tx state.Tx) (err error) {
		users, err = state.List[User](tx, kindUser, id.Account+"/")
		return err
	})
	if err != nil {
		return nil, err
	}
	byKey := map[string]*User{}
	var keys []string
	for i := range users {
		if strings.HasPrefix(users[i].Path, firstNonEmpty(f.get("PathPrefix"), "/")) {
			k := strings.ToLower(users[i].Name)
			byKey[k] = &users[i]
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	keys, marker, trunc, err := page(f, keys)
	if err != nil {
		return nil, err
	}
	out := struct {
		Users []userXML `xml:"Users>member"`
		listPage
	}{Users: []userXML{}, listPage: listPage{trunc, marker}}
	for _, k := range keys {
		out.Users = append(out.Users, userOut(byKey[k]))
	}
	return out, nil
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (s *Service) deleteUser(r *http.Request, id *awsapi.Identity, f form) (any, error) {
	name := f.get("UserName")
	return noResult{}, s.Store.State.Update(r.Context(), func(tx state.Tx) error {
		u, err := s.getUserTx(tx, id.Account, name)
		if err != nil {
			return err
		}
		if len(u.Policies) > 0 {
			return &awsapi.Error{Code: "DeleteConflict", Message: "Cannot delete entity, must delete policies first.", Status: 409}
		}
		keys, err := state.List[AccessKey](tx, kindKey, "")
		if err != nil {
			return err
		}
		for _, k := range keys {
			if k.Account == id.Account && k.User == u.Name {
				return &awsapi.Error{Code: "DeleteConflict", Message: "Cannot delete entity, must delete access keys first.", Status: 409}
			}
		}
		_, err = tx.Delete(kindUser, userKey(id.Account, name))
		return err
	})
}

type accessKeyXML struct {
	UserName        string `xml:",omitempty"`
	AccessKeyId     string
	Status          string
	SecretAccessKey string `xml:",omitempty"`
	CreateDate      string
}

// keyUser is the user a key operation acts on: UserName, else the caller.
func keyUser(id *awsapi.Identity, f form) string {
	if n := f.get("UserName"); n != "" {
		return n
	}
	if strings.Contains(id.ARN, ":user/") {
		return id.ARN[strings.LastIndex(id.ARN, "/")+1:]
	}
	return ""
}

func (s *Service) createAccessKey(r *http.Request, id *awsapi.Identity, f form) (any, error) {
	user := keyUser(id, f)
	if user != "" {
		if e := checkName("userName", user, nameRe); e != nil {
			return nil, e
		}
	}
	k, secret, err := s.Store.CreateKey(r.Context(), id.Account, user)
	if err != nil {
		return nil, err
	}
	return struct{ AccessKey accessKeyXML }{accessKeyXML{k.User, k.ID, k.Status, secret, isoTime(k.Created)}}, nil
}

func (s *Service) listAccessKeys(r *http.Request, id *awsapi.Identity, f form) (any, error) {
	user := keyUser(id, f)
	if user != "" {
		if err := s.Store.State.View(r.Context(), func(tx state.Tx) error {
			_, err := s.getUserTx(tx, id.Account, user)
			return err
		}); err != nil {
			return nil, err
		}
	}
	keys, err := s.Store.Keys(r.Context(), id.Account, &user)
	if err != nil {
		return nil, err
	}
	out := struct {
		AccessKeyMetadata []accessKeyXML `xml:"AccessKeyMetadata>member"`
		listPage
	}{AccessKeyMetadata: []accessKeyXML{}}
	for _, k := range keys {
		out.AccessKeyMetadata = append(out.AccessKeyMetadata, accessKeyXML{UserName: k.User, AccessKeyId: k.ID, Status: k.Status, CreateDate: isoTime(k.Created)})
	}
	return out, nil
}

func (s *Service) deleteAccessKey(r *http.Request, id *awsapi.Identity, f form) (any, error) {
	keyID, user := f.get("AccessKeyId"), keyUser(id, f)
	return noResult{}, s.Store.State.Update(r.Context(), func(tx state.Tx) error {
		var k AccessKey
		ok, err := tx.Get(kindKey, keyID, &k)
		if err != nil {
			return err
		}
		if !ok || k.Account != id.Account || !strings.EqualFold(k.User, user) {
			return &awsapi.Error{Code: "NoSuchEntity", Message: "The Access Key with id " + keyID + " cannot be found.", Status: 404}
		}
		_, err = tx.Delete(kindKey, keyID)
		return err
	})
}

// Inline policies, shared by users and roles.

type policyXML struct {
	Name, PolicyName, PolicyDocument string
}

func (s *Service) putPolicy(r *http.Request, id *awsapi.Identity, f form, role bool) (any, error) {
	pname, doc := f.get("PolicyName"), f.get("PolicyDocument")
	if e := checkName("policyName", pname, policyNameRe); e != nil {
		return nil, e
	}
	if _, err := ParsePolicy(doc, false); err != nil {
		return nil, err
	}
	return noResult{}, s.Store.State.Update(r.Context(), func(tx state.Tx) error {
		if role {
			ro, err := s.getRoleTx(tx, id.Account, f.get("RoleName"))
			if err != nil {
				return err
			}
			if ro.Policies == nil {
				ro.Policies = map[string]string{}
			}
			ro.Policies[pname] = doc
			return tx.Put(kindRole, userKey(id.Account, ro.Name), ro)
		}
		u, err := s.getUserTx(tx, id.Account, f.get("UserName"))
		if err != nil {
			return err
		}
		if u.Policies == nil {
			u.Policies = map[string]string{}
		}
		u.Policies[pname] = doc
		return tx.Put(kindUser, userKey(id.Account, u.Name), u)
	})
}

func (s *Service) policies(r *http.Request, id *awsapi.Identity, f form, role bool) (owner string, p map[string]string, err error) {
	err = s.Store.State.View(r.Context(), func(tx state.Tx) error {
		if role {
			ro, err := s.getRoleTx(tx, id.Account, f.get("RoleName"))
			if err == nil {
				owner, p = ro.Name, ro.Policies
			}
			return err
		}
		u, err := s.getUserTx(tx, id.Account, f.get("UserName"))
		if err == nil {
			owner, p = u.Name, u.Policies
		}
		return err
	})
	return
}

func noSuchPolicy(owner, pname string) error {
	return &awsapi.Error{Code: "NoSuchEntity", Message: "The " + owner + " policy with name " + pname + " cannot be found.", Status: 404}
}

func (s *Service) getPolicy(r *http.Request, id *awsapi.Identity, f form, role bool) (any, error) {
	owner, pols, err := s.policies(r, id, f, role)
	if err != nil {
		return nil, err
	}
	pname := f.get("PolicyName")
	doc, ok := pols[pname]
	if !ok {
		if role {
			return nil, noSuchPolicy("role", pname)
		}
		return nil, noSuchPolicy("user", pname)
	}
	if role {
		return struct{ RoleName, PolicyName, PolicyDocument string }{owner, pname, url.PathEscape(doc)}, nil
	}
	return struct{ UserName, PolicyName, PolicyDocument string }{owner, pname, url.PathEscape(doc)}, nil
}

func (s *Service) listPolicies(r *http.Request, id *awsapi.Identity, f form, role bool) (any, error) {
	_, pols, err := s.policies(r, id, f, role)
	if err != nil {
		return nil, err
	}
	names := []string{}
	for n := range pols {
		names = append(names, n)
	}
	sort.Strings(names)
	names, marker, trunc, err := page(f, names)
	if err != nil {
		return nil, err
	}
	return struct {
		PolicyNames []string `xml:"PolicyNames>member"`
		listPage
	}{append([]string{}, names...), listPage{trunc, marker}}, nil
}

func (s *Service) deletePolicy(r *http.Request, id *awsapi.Identity, f form, role bool) (any, error) {
	pname := f.get("PolicyName")
	return noResult{}, s.Store.State.Update(r.Context(), func(tx state.Tx) error {
		if role {
			ro, err := s.getRoleTx(tx, id.Account, f.get("RoleName"))
			if err != nil {
				return err
			}
			if _, ok := ro.Policies[pname]; !ok {
				return noSuchPolicy("role", pname)
			}
			delete(ro.Policies, pname)
			return tx.Put(kindRole, userKey(id.Account, ro.Name), ro)
		}
		u, err := s.getUserTx(tx, id.Account, f.get("UserName"))
		if err != nil {
			return err
		}
		if _, ok := u.Policies[pname]; !ok {
			return noSuchPolicy("user", pname)
		}
		delete(u.Policies, pname)
		return tx.Put(kindUser, userKey(id.Account, u.Name), u)
	})
}

func (s *Service) putUserPolicy(r *http.Request, id *awsapi.Identity, f form) (any, error) {
	return s.putPolicy(r, id, f, false)
}
func (s *Service) getUserPolicy(r *http.Request, id *awsapi.Identity, f form) (any, error) {
	return s.getPolicy(r, id, f, false)
}
func (s *Service) listUserPolicies(r *http.Request, id *awsapi.Identity, f form) (any, error) {
	return s.listPolicies(r, id, f, false)
}
func (s *Service) deleteUserPolicy(r *http.Request, id *awsapi.Identity, f form) (any, error) {
	return s.deletePolicy(r, id, f, false)
}
func (s *Service) putRolePolicy(r *http.Request, id *awsapi.Identity, f form) (any, error) {
	return s.putPolicy(r, id, f, true)
}
func (s *Service) getRolePolicy(r *http.Request, id *awsapi.Identity, f form) (any, error) {
	return s.getPolicy(r, id, f, true)
}
func (s *Service) listRolePolicies(r *http.Request, id *awsapi.Identity, f form) (any, error) {
	return s.listPolicies(r, id, f, true)
}
func (s *Service) deleteRolePolicy(r *http.Request, id *awsapi.Identity, f form) (any, error) {
	return s.deletePolicy(r, id, f, true)
}

// Roles.

func (s *Service) createRole(r *http.Request, id *awsapi.Identity, f form) (any, error) {
	name, doc := f.get("RoleName"), f.get("AssumeRolePolicyDocument")
	if e := checkName("roleName", name, nameRe); e != nil {
		return nil, e
	}
	path, err := pathParam(f)
	if err != nil {
		return nil, err
	}
	if doc == "" {
		return nil, validation("1 validation error detected: Value null at 'assumeRolePolicyDocument' failed to satisfy constraint: Member must not be null")
	}
	if _, err := ParsePolicy(doc, true); err != nil {
		return nil, err
	}
	max := 3600
	if v := f.get("MaxSessionDuration"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 3600 || n > 43200 {
			return nil, validation("1 validation error detected: Value '%s' at 'maxSessionDuration' failed to satisfy constraint: Member must have value between 3600 and 43200", v)
		}
		max = n
	}
	if len(f.get("Description")) > 1000 {
		return nil, validation("1 validation error detected: Value at 'description' failed to satisfy constraint: Member must have length less than or equal to 1000")
	}
	ro := &Role{Account: id.Account, Name: name, ID: "AROA" + randomString(17, upper32), Path: path, Description: f.get("Description"),
		AssumeRolePolicy: doc, MaxSessionDuration: max, Created: s.Store.now()}
	err = s.Store.State.Update(r.Context(), func(tx state.Tx) error {
		if ok, err := tx.Get(kindRole, userKey(id.Account, name), &Role{}); err != nil || ok {
			if err == nil {
				err = &awsapi.Error{Code: "EntityAlreadyExists", Message: "Role with name " + name + " already exists.", Status: 409}
			}
			return err
		}
		return tx.Put(kindRole, userKey(id.Account, name), ro)
	})
	if err != nil {
		return nil, err
	}
	return struct{ Role roleXML }{roleOut(ro)}, nil
}

func (s *Service) getRole(r *http.Request, id *awsapi.Identity, f form) (any, error) {
	var ro *Role
	err := s.Store.State.View(r.Context(), func(tx state.Tx) (err error) {
		ro, err = s.getRoleTx(tx, id.Account, f.get("RoleName"))
		return err
	})
	if err != nil {
		return nil, err
	}
	return struct{ Role roleXML }{roleOut(ro)}, nil
}

func (s *Service) listRoles(r *http.Request, id *awsapi.Identity, f form) (any, error) {
	var roles []Role
	err := s.Store.State.View(r.Context(), func(tx state.Tx) (err error) {
		roles, err = state.List[Role](tx, kindRole, id.Account+"/")
		return err
	})
	if err != nil {
		return nil, err
	}
	byKey := map[string]*Role{}
	var keys []string
	for i := range roles {
		if strings.HasPrefix(roles[i].Path, firstNonEmpty(f.get("PathPrefix"), "/")) {
			k := strings.ToLower(roles[i].Name)
			byKey[k] = &roles[i]
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	keys, marker, trunc, err := page(f, keys)
	if err != nil {
		return nil, err
	}
	out := struct {
		Roles []roleXML `xml:"Roles>member"`
		listPage
	}{Roles: []roleXML{}, listPage: listPage{trunc, marker}}
	for _, k := range keys {
		out.Roles = append(out.Roles, roleOut(byKey[k]))
	}
	return out, nil
}

func (s *Service) deleteRole(r *http.Request, id *awsapi.Identity, f form) (any, error) {
	return noResult{}, s.Store.State.Update(r.Context(), func(tx state.Tx) error {
		ro, err := s.getRoleTx(tx, id.Account, f.get("RoleName"))
		if err != nil {
			return err
		}
		if len(ro.Policies) > 0 {
			return &awsapi.Error{Code: "DeleteConflict", Message: "Cannot delete entity, must delete policies first.", Status: 409}
		}
		_, err = tx.Delete(kindRole, userKey(id.Account, ro.Name))
		return err
	})
}

// GetRole reads a role by name, for other packages (task roles).
func (s *Store) GetRole(ctx context.Context, account, name string) (*Role, error) {
	var ro *Role
	err := s.State.View(ctx, func(tx state.Tx) (err error) {
		ro, err = (&Service{Store: s}).getRoleTx(tx, account, name)
		return err
	})
	return ro, err
}
