package secrets

import (
	"context"
	"encoding/base64"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/state"
)

// SSMTargetPrefix is Parameter Store's X-Amz-Target prefix (signing name ssm).
const SSMTargetPrefix = "AmazonSSM"

const kindParam = "ssm.parameter"

// maxParamVersions is how many versions of a parameter are kept, as AWS.
const maxParamVersions = 100

// SSM is the Parameter Store subset of SSM's JSON 1.1 service.
func (s *Service) SSM() *awsapi.JSONService {
	return &awsapi.JSONService{TargetPrefix: SSMTargetPrefix, Log: s.Log, Ops: map[string]awsapi.Handler{
		"PutParameter":        awsapi.Op(s.putParameter),
		"GetParameter":        awsapi.Op(s.getParameter),
		"GetParameters":       awsapi.Op(s.getParameters),
		"GetParametersByPath": awsapi.Op(s.getParametersByPath),
		"DeleteParameter":     awsapi.Op(s.deleteParameter),
		"DeleteParameters":    awsapi.Op(s.deleteParameters),
	}}
}

// parameter is the stored document; every value is sealed, SecureString
// or not, so the database holds no parameter value in the clear.
type parameter struct {
	Name        string         `json:"name"`
	ARN         string         `json:"arn"`
	Type        string         `json:"type"`
	Description string         `json:"description,omitempty"`
	KeyID       string         `json:"keyId,omitempty"`
	DataType    string         `json:"dataType"`
	Tier        string         `json:"tier"`
	Version     int64          `json:"version"`
	Versions    []paramVersion `json:"versions"` // oldest first; the last is current
}

type paramVersion struct {
	Version  int64     `json:"version"`
	Type     string    `json:"type"`
	Modified time.Time `json:"modified"`
	Sealed   []byte    `json:"sealed"`
	Labels   []string  `json:"labels,omitempty"`
}

func paramBind(arn string, v int64) string { return arn + "#" + strconv.FormatInt(v, 10) }

func validationErr(format string, args ...any) *awsapi.Error {
	return awsapi.Errorf("ValidationException", format, args...)
}

func paramNotFound(name string) *awsapi.Error {
	return awsapi.Errorf("ParameterNotFound", "Parameter %s not found.", name)
}

var paramNameRE = regexp.MustCompile(`^[a-zA-Z0-9_.\-/]+$`)

func checkParamName(name string) error {
	if name == "" || len(name) > 1011 {
		return validationErr("Parameter name must be 1 to 1011 characters long.")
	}
	if !paramNameRE.MatchString(name) {
		return validationErr("Parameter name: can't be prefixed with \"aws\" or \"ssm\" (case-insensitive). It must use only letters, numbers, or the following symbols: . (period), - (hyphen), _ (underscore), and /.")
	}
	if strings.Contains(name, "/") && !strings.HasPrefix(name, "/") {
		return validationErr("Parameter name must be a fully qualified name.")
	}
	if strings.Count(name, "/") > 15 {
		return awsapi.Errorf("HierarchyLevelLimitExceededException", "Parameter name hierarchy can have at most 15 levels.")
	}
	first := strings.ToLower(strings.TrimPrefix(name, "/"))
	if strings.HasPrefix(first, "aws") || strings.HasPrefix(first, "ssm") {
		return validationErr("No access to reserved parameter name: %s.", name)
	}
	return nil
}

func paramARN(account, region, name string) string {
	return fmt.Sprintf("arn:aws:ssm:%s:%s:parameter/%s", region, account, strings.TrimPrefix(name, "/"))
}

// paramRef splits a GetParameter name (a name or an ARN, optionally with
// :version or :label) into the name and the selector.
func paramRef(account, region, ref string) (name, selector string, err error) {
	if strings.HasPrefix(ref, "arn:") {
		p := strings.SplitN(ref, ":", 6)
		if len(p) != 6 || p[2] != "ssm" || !strings.HasPrefix(p[5], "parameter/") {
			return "", "", validationErr("Invalid parameter ARN %s.", ref)
		}
		if p[3] != region || p[4] != account {
			return "", "", paramNotFound(ref)
		}
		ref = strings.TrimPrefix(p[5], "parameter")
		// "parameter/a/b" names "/a/b"; "parameter/a" names "a" or "/a",
		// which lookups try in turn.
		if strings.Count(ref, "/") == 1 {
			ref = strings.TrimPrefix(ref, "/")
		}
	}
	name, selector, _ = strings.Cut(ref, ":")
	return name, selector, nil
}

func (s *Service) loadParam(tx state.Tx, account, region, name string) (*parameter, error) {
	var p parameter
	ok, err := tx.Get(kindParam, docKey(account, region, name), &p)
	if err != nil {
		return nil, err
	}
	if !ok && !strings.HasPrefix(name, "/") && !strings.Contains(name, "/") {
		// From an ARN "parameter/a": the name may also be "/a".
		ok, err = tx.Get(kindParam, docKey(account, region, "/"+name), &p)
		if err != nil {
			return nil, err
		}
	}
	if !ok {
		return nil, nil
	}
	return &p, nil
}

// ---- PutParameter

type putParameterIn struct {
	Name           *string `json:"Name"`
	Description    *string `json:"Description"`
	Value          *string `json:"Value"`
	Type           *string `json:"Type"`
	KeyId          *string `json:"KeyId"`
	Overwrite      *bool   `json:"Overwrite"`
	AllowedPattern *string `json:"AllowedPattern"`
	Tags           []tag   `json:"Tags"`
	Tier           *string `json:"Tier"`
	DataType       *string `json:"DataType"`
}

type putParameterOut struct {
	Version int64  `json:"Version"`
	Tier    string `json:"Tier"`
}

func (s *Service) putParameter(ctx context.Context, in *putParameterIn) (*putParameterOut, error) {
	account, region := scopeOf(ctx)
	name := ecstypes.Deref(in.Name)
	if err := checkParamName(name); err != nil {
		return nil, err
	}
	if in.Value == nil || *in.Value == "" {
		return nil, validationErr("1 validation error detected: Value at 'value' failed to satisfy constraint: Member must have length greater than or equal to 1")
	}
	tier := ecstypes.Deref(in.Tier)
	switch tier {
	case "", "Standard", "Intelligent-Tiering":
		tier = "Standard"
		if len(*in.Value) > 4096 {
			if ecstypes.Deref(in.Tier) == "Standard" {
				return nil, validationErr("Standard tier parameters support a maximum parameter value of 4096 characters. To create a larger parameter value, upgrade the parameter to use the advanced-parameter tier.")
			}
			tier = "Advanced"
		}
	case "Advanced":
	default:
		return nil, validationErr("1 validation error detected: Value '%s' at 'tier' failed to satisfy constraint: Member must satisfy enum value set: [Advanced, Intelligent-Tiering, Standard]", tier)
	}
	if len(*in.Value) > 8192 {
		return nil, validationErr("Parameter values are at most 8192 characters long.")
	}
	typ := ecstypes.Deref(in.Type)
	if typ != "" && typ != "String" && typ != "StringList" && typ != "SecureString" {
		return nil, validationErr("1 validation error detected: Value '%s' at 'type' failed to satisfy constraint: Member must satisfy enum value set: [SecureString, StringList, String]", typ)
	}
	dataType := ecstypes.Deref(in.DataType)
	if dataType == "" {
		dataType = "text"
	}
	if dataType != "text" && dataType != "aws:ec2:image" && dataType != "aws:ssm:integration" {
		return nil, validationErr("The following data type is not supported: %s (Data type names are all lowercase.)", dataType)
	}
	if in.KeyId != nil && typ != "SecureString" {
		return nil, validationErr("KeyId is required for SecureString type parameter only.")
	}
	if pat := ecstypes.Deref(in.AllowedPattern); pat != "" {
		re, err := regexp.Compile(pat)
		if err != nil {
			return nil, validationErr("Parameter AllowedPattern is not a valid regular expression.")
		}
		if !re.MatchString(*in.Value) {
			return nil, awsapi.Errorf("ParameterPatternMismatchException", "Parameter value, cannot be validated against allowedPattern: %s", pat)
		}
	}
	overwrite := ecstypes.Deref(in.Overwrite)
	if overwrite && len(in.Tags) > 0 {
		return nil, validationErr("Invalid request: tags and overwrite can't be used together. To create a parameter with tags, please remove overwrite flag. To update tags for an existing parameter, please use AddTagsToResource or RemoveTagsFromResource.")
	}
	var out *putParameterOut
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		var p parameter
		ok, err := tx.Get(kindParam, docKey(account, region, name), &p)
		if err != nil {
			return err
		}
		if ok && !overwrite {
			return awsapi.Errorf("ParameterAlreadyExists", "The parameter already exists. To overwrite this value, set the overwrite option in the request to true.")
		}
		if !ok {
			if typ == "" {
				return validationErr("A parameter type is required when you create a parameter.")
			}
			p = parameter{Name: name, ARN: paramARN(account, region, name)}
		}
		if typ == "" {
			typ = p.Type
		}
		if len(p.Versions) >= maxParamVersions {
			if len(p.Versions[0].Labels) > 0 {
				return awsapi.Errorf("ParameterMaxVersionLimitExceeded", "You attempted to create a new version of %s by calling the PutParameter API with the overwrite flag. Version %d, the oldest version, can't be deleted because it has a label associated with it.", name, p.Versions[0].Version)
			}
			p.Versions = p.Versions[1:]
		}
		p.Version++
		p.Type, p.DataType = typ, dataType
		if tier == "Advanced" || p.Tier == "Advanced" {
			p.Tier = "Advanced"
		} else {
			p.Tier = "Standard"
		}
		if in.Description != nil {
			p.Description = *in.Description
		}
		if typ == "SecureString" {
			p.KeyID = ecstypes.Deref(in.KeyId)
			if p.KeyID == "" {
				p.KeyID = "alias/aws/ssm"
			}
		} else {
			p.KeyID = ""
		}
		p.Versions = append(p.Versions, paramVersion{Version: p.Version, Type: typ, Modified: s.now(),
			Sealed: s.Sealer.Seal([]byte(*in.Value), paramBind(p.ARN, p.Version))})
		out = &putParameterOut{Version: p.Version, Tier: p.Tier}
		return tx.Put(kindParam, docKey(account, region, name), &p)
	})
	return out, err
}

// ---- GetParameter(s)

type paramOut struct {
	Name             string `json:"Name"`
	Type             string `json:"Type"`
	Value            string `json:"Value"`
	Version          int64  `json:"Version"`
	Selector         string `json:"Selector,omitempty"`
	LastModifiedDate *epoch `json:"LastModifiedDate"`
	ARN              string `json:"ARN"`
	DataType         string `json:"DataType"`
}

// read finds a parameter by name or ARN (with an optional :version or
// :label) and returns it, its value decrypted when decrypt or not secure.
func (s *Service) readParam(tx state.Tx, account, region, ref string, decrypt bool) (*paramOut, error) {
	name, selector, err := paramRef(account, region, ref)
	if err != nil {
		return nil, err
	}
	p, err := s.loadParam(tx, account, region, name)
	if err != nil {
		return nil, err
	}
	if p == nil || len(p.Versions) == 0 {
		return nil, paramNotFound(ref)
	}
	ver := p.Versions[len(p.Versions)-1]
	if selector != "" {
		found := false
		if n, err := strconv.ParseInt(selector, 10, 64); err == nil {
			for _, v := range p.Versions {
				if v.Version == n {
					ver, found = v, true
				}
			}
			if !found {
				return nil, awsapi.Errorf("ParameterVersionNotFound", "Systems Manager could not find version %s of %s. Verify the version and try again.", selector, p.Name)
			}
		} else {
			for _, v := range p.Versions {
				if slices.Contains(v.Labels, selector) {
					ver, found = v, true
				}
			}
			if !found {
				return nil, awsapi.Errorf("ParameterVersionLabelNotFound", "Systems Manager could not find label %s of %s.", selector, p.Name)
			}
		}
		selector = ":" + selector
	}
	out := &paramOut{Name: p.Name, Type: ver.Type, Version: ver.Version, Selector: selector,
		LastModifiedDate: at(ver.Modified), ARN: p.ARN, DataType: p.DataType}
	if ver.Type == "SecureString" && !decrypt {
		// What AWS returns is the KMS ciphertext; ours is the sealed bytes.
		out.Value = base64.StdEncoding.EncodeToString(ver.Sealed)
		return out, nil
	}
	plain, err := s.Sealer.Open(ver.Sealed, paramBind(p.ARN, ver.Version))
	if err != nil {
		return nil, awsapi.Errorf("InvalidKeyId", "The parameter %s cannot be decrypted with this server's secrets key.", p.Name)
	}
	out.Value = string(plain)
	return out, nil
}

type getParameterIn struct {
	Name           *string `json:"Name"`
	WithDecryption *bool   `json:"WithDecryption"`
}

type getParameterOut struct {
	Parameter *paramOut `json:"Parameter"`
}

func (s *Service) getParameter(ctx context.Context, in *getParameterIn) (*getParameterOut, error) {
	account, region := scopeOf(ctx)
	if ecstypes.Deref(in.Name) == "" {
		return nil, validationErr("1 validation error detected: Value null at 'name' failed to satisfy constraint: Member must not be null")
	}
	var out *paramOut
	err := s.Store.View(ctx, func(tx state.Tx) error {
		var err error
		out, err = s.readParam(tx, account, region, *in.Name, ecstypes.Deref(in.WithDecryption))
		return err
	})
	if err != nil {
		return nil, err
	}
	return &getParameterOut{Parameter: out}, nil
}

type getParametersIn struct {
	Names          []string `json:"Names"`
	WithDecryption *bool    `json:"WithDecryption"`
}

type getParametersOut struct {
	Parameters        []*paramOut `json:"Parameters"`
	InvalidParameters []string    `json:"InvalidParameters"`
}

func (s *Service) getParameters(ctx context.Context, in *getParametersIn) (*getParametersOut, error) {
	account, region := scopeOf(ctx)
	if len(in.Names) < 1 || len(in.Names) > 10 {
		return nil, validationErr("1 validation error detected: Value at 'names' failed to satisfy constraint: Member must have length less than or equal to 10 and greater than or equal to 1")
	}
	out := &getParametersOut{Parameters: []*paramOut{}, InvalidParameters: []string{}}
	err := s.Store.View(ctx, func(tx state.Tx) error {
		seen := map[string]bool{}
		for _, n := range in.Names {
			if seen[n] {
				continue
			}
			seen[n] = true
			p, err := s.readParam(tx, account, region, n, ecstypes.Deref(in.WithDecryption))
			if e, ok := err.(*awsapi.Error); ok && e.Status < 500 {
				out.InvalidParameters = append(out.InvalidParameters, n)
				continue
			}
			if err != nil {
				return err
			}
			out.Parameters = append(out.Parameters, p)
		}
		return nil
	})
	return out, err
}

type getByPathIn struct {
	Path             *string `json:"Path"`
	Recursive        *bool   `json:"Recursive"`
	WithDecryption   *bool   `json:"WithDecryption"`
	MaxResults       *int32  `json:"MaxResults"`
	NextToken        *string `json:"NextToken"`
	ParameterFilters []any   `json:"ParameterFilters"`
}

type getByPathOut struct {
	Parameters []*paramOut `json:"Parameters"`
	NextToken  *string     `json:"NextToken,omitempty"`
}

func (s *Service) getParametersByPath(ctx context.Context, in *getByPathIn) (*getByPathOut, error) {
	account, region := scopeOf(ctx)
	path := ecstypes.Deref(in.Path)
	if !strings.HasPrefix(path, "/") || !paramNameRE.MatchString(path) {
		return nil, validationErr("The parameter doesn't meet the parameter name requirements. The parameter name must begin with a forward slash \"/\". It can't be prefixed with \"aws\" or \"ssm\" (case-insensitive). It must use only letters, numbers, or the following symbols: . (period), - (hyphen), _ (underscore). Special characters are not allowed. All sub-paths, if specified, must use the forward slash symbol \"/\". Valid example: /get/parameters2-/by1./path0_.")
	}
	if len(in.ParameterFilters) > 0 {
		return nil, validationErr("ParameterFilters are not supported by this server.")
	}
	max := int(ecstypes.Deref(in.MaxResults))
	if in.MaxResults != nil && (max < 1 || max > 10) {
		return nil, validationErr("1 validation error detected: Value '%d' at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to 10", max)
	}
	if max == 0 {
		max = 10
	}
	prefix := strings.TrimSuffix(path, "/") + "/"
	after := ""
	if tok := ecstypes.Deref(in.NextToken); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || !strings.HasPrefix(string(b), prefix) {
			return nil, validationErr("The NextToken value is invalid.")
		}
		after = docKey(account, region, string(b))
	}
	out := &getByPathOut{Parameters: []*paramOut{}}
	err := s.Store.View(ctx, func(tx state.Tx) error {
		var names []string
		err := tx.Scan(kindParam, docKey(account, region, prefix), after, 0, func(key string, _ []byte) error {
			name := strings.TrimPrefix(key, docKey(account, region, ""))
			if !ecstypes.Deref(in.Recursive) && strings.Contains(name[len(prefix):], "/") {
				return nil
			}
			names = append(names, name)
			return nil
		})
		if err != nil {
			return err
		}
		for i, n := range names {
			if i == max {
				tok := base64.RawURLEncoding.EncodeToString([]byte(names[i-1]))
				out.NextToken = &tok
				break
			}
			p, err := s.readParam(tx, account, region, n, ecstypes.Deref(in.WithDecryption))
			if err != nil {
				return err
			}
			out.Parameters = append(out.Parameters, p)
		}
		return nil
	})
	return out, err
}

// ---- DeleteParameter(s)

type deleteParameterIn struct {
	Name *string `json:"Name"`
}

func (s *Service) deleteParameter(ctx context.Context, in *deleteParameterIn) (*empty, error) {
	account, region := scopeOf(ctx)
	name := ecstypes.Deref(in.Name)
	if name == "" {
		return nil, validationErr("1 validation error detected: Value null at 'name' failed to satisfy constraint: Member must not be null")
	}
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		ok, err := tx.Delete(kindParam, docKey(account, region, name))
		if err != nil {
			return err
		}
		if !ok {
			return paramNotFound(name)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &empty{}, nil
}

type deleteParametersIn struct {
	Names []string `json:"Names"`
}

type deleteParametersOut struct {
	DeletedParameters []string `json:"DeletedParameters"`
	InvalidParameters []string `json:"InvalidParameters"`
}

func (s *Service) deleteParameters(ctx context.Context, in *deleteParametersIn) (*deleteParametersOut, error) {
	account, region := scopeOf(ctx)
	if len(in.Names) < 1 || len(in.Names) > 10 {
		return nil, validationErr("1 validation error detected: Value at 'names' failed to satisfy constraint: Member must have length less than or equal to 10 and greater than or equal to 1")
	}
	out := &deleteParametersOut{DeletedParameters: []string{}, InvalidParameters: []string{}}
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		out.DeletedParameters, out.InvalidParameters = out.DeletedParameters[:0], out.InvalidParameters[:0]
		for _, n := range in.Names {
			ok, err := tx.Delete(kindParam, docKey(account, region, n))
			if err != nil {
				return err
			}
			if ok {
				out.DeletedParameters = append(out.DeletedParameters, n)
			} else {
				out.InvalidParameters = append(out.InvalidParameters, n)
			}
		}
		return nil
	})
	return out, err
}
