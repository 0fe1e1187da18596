// Package secrets is Secrets Manager and the SSM Parameter Store subset
// tasks use, and what the agent asks when a task's containers reference
// them (containerDefinitions[].secrets, repositoryCredentials). Values are
// sealed with AES-GCM under a key kept outside the state database
// (DATA_DIR/secrets.key); only the API calls that return values, and the
// agent at container start, ever see them in the clear.
package secrets

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"math/big"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/state"
)

// TargetPrefix is Secrets Manager's X-Amz-Target prefix (signing name
// secretsmanager).
const TargetPrefix = "secretsmanager"

const kindSecret = "secretsmanager.secret"

// Service answers Secrets Manager and, through SSM, Parameter Store.
type Service struct {
	Store  state.Store
	Sealer *Sealer
	Log    *slog.Logger
	Now    func() time.Time
	// RoleAllows says whether a task's execution role may perform action
	// on resource (IAM's judgement); nil: every task may read every
	// secret of its account.
	RoleAllows func(ctx context.Context, taskARN, roleARN, action, resource string) error
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// JSON is Secrets Manager's JSON 1.1 service.
func (s *Service) JSON() *awsapi.JSONService {
	return &awsapi.JSONService{TargetPrefix: TargetPrefix, Log: s.Log, Ops: map[string]awsapi.Handler{
		"CreateSecret":         awsapi.Op(s.createSecret),
		"GetSecretValue":       awsapi.Op(s.getSecretValue),
		"PutSecretValue":       awsapi.Op(s.putSecretValue),
		"UpdateSecret":         awsapi.Op(s.updateSecret),
		"DescribeSecret":       awsapi.Op(s.describeSecret),
		"ListSecrets":          awsapi.Op(s.listSecrets),
		"ListSecretVersionIds": awsapi.Op(s.listSecretVersionIds),
		"DeleteSecret":         awsapi.Op(s.deleteSecret),
		"RestoreSecret":        awsapi.Op(s.restoreSecret),
		"TagResource":          awsapi.Op(s.tagResource),
		"UntagResource":        awsapi.Op(s.untagResource),
	}}
}

// secret is the stored document: metadata in the clear, values sealed.
type secret struct {
	ARN          string             `json:"arn"`
	Name         string             `json:"name"`
	Description  string             `json:"description,omitempty"`
	KmsKeyID     string             `json:"kmsKeyId,omitempty"`
	Tags         []tag              `json:"tags,omitempty"`
	Created      time.Time          `json:"created"`
	LastChanged  time.Time          `json:"lastChanged"`
	LastAccessed *time.Time         `json:"lastAccessed,omitempty"`
	Deleted      *time.Time         `json:"deleted,omitempty"`  // when DeleteSecret was called
	DeletionDate *time.Time         `json:"deletion,omitempty"` // when it goes for good
	Versions     map[string]version `json:"versions,omitempty"`
	VersionOrder []string           `json:"versionOrder,omitempty"` // oldest first
}

type version struct {
	Stages  []string  `json:"stages,omitempty"`
	Created time.Time `json:"created"`
	Binary  bool      `json:"binary,omitempty"`
	Sealed  []byte    `json:"sealed"`
}

type tag struct {
	Key   *string `json:"Key,omitempty"`
	Value *string `json:"Value,omitempty"`
}

type epoch = ecstypes.Time

func at(t time.Time) *epoch { return &epoch{Time: t} }

// maxVersions bounds the versions kept without a staging label, as AWS
// keeps about 100.
const maxVersions = 100

func errNotFound() *awsapi.Error {
	return awsapi.Errorf("ResourceNotFoundException", "Secrets Manager can't find the specified secret.")
}

func errDeleted() *awsapi.Error {
	return awsapi.Errorf("InvalidRequestException", "You can't perform this operation on the secret because it was marked for deletion.")
}

func invalidParam(format string, args ...any) *awsapi.Error {
	return awsapi.Errorf("InvalidParameterException", format, args...)
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9/_+=.@-]{1,512}$`)

func scopeOf(ctx context.Context) (account, region string) {
	id := awsapi.IdentityFrom(ctx)
	return id.Account, id.Region
}

func docKey(account, region, name string) string { return account + "/" + region + "/" + name }

const suffixChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

func randSuffix() string {
	b := make([]byte, 6)
	for i := range b {
		n, _ := rand.Int(rand.Reader, big.NewInt(int64(len(suffixChars))))
		b[i] = suffixChars[n.Int64()]
	}
	return string(b)
}

// find resolves a SecretId: a name, a full ARN, or a partial ARN (without
// the random suffix). Secrets past their recovery window are purged here.
func (s *Service) find(tx state.Tx, account, region, id string) (*secret, error) {
	if id == "" {
		return nil, invalidParam("You must specify a SecretId.")
	}
	name := id
	if strings.HasPrefix(id, "arn:") {
		p := strings.SplitN(id, ":", 7)
		if len(p) != 7 || p[2] != "secretsmanager" || p[5] != "secret" || p[3] != region || p[4] != account {
			return nil, errNotFound()
		}
		name = p[6]
	}
	var sec secret
	ok, err := tx.Get(kindSecret, docKey(account, region, name), &sec)
	if err != nil {
		return nil, err
	}
	if ok && strings.HasPrefix(id, "arn:") && sec.ARN != id && !strings.HasSuffix(id, ":secret:"+sec.Name) {
		ok = false
	}
	if !ok && strings.HasPrefix(id, "arn:") && len(name) > 7 && name[len(name)-7] == '-' {
		// A full ARN: the name is before the suffix.
		ok, err = tx.Get(kindSecret, docKey(account, region, name[:len(name)-7]), &sec)
		if err != nil {
			return nil, err
		}
		ok = ok && sec.ARN == id
	}
	if !ok {
		return nil, errNotFound()
	}
	if sec.DeletionDate != nil && !s.now().Before(*sec.DeletionDate) {
		if _, err := tx.Delete(kindSecret, docKey(account, region, sec.Name)); err != nil {
			return nil, err
		}
		return nil, errNotFound()
	}
	return &sec, nil
}

func (s *Service) put(tx state.Tx, account, region string, sec *secret) error {
	return tx.Put(kindSecret, docKey(account, region, sec.Name), sec)
}

func bind(arn, versionID string) string { return arn + "#" + versionID }

// value is a secret value as the API carries it.
type value struct {
	String *string
	Binary []byte
}

func (v value) present() bool { return v.String != nil || v.Binary != nil }

func checkValue(str *string, bin []byte) (value, error) {
	if str != nil && bin != nil {
		return value{}, invalidParam("You can't specify both a binary secret value and a string secret value in the same secret.")
	}
	if str != nil && len(*str) > 65536 || len(bin) > 65536 {
		return value{}, invalidParam("The secret value exceeds the maximum size of 65536 bytes.")
	}
	return value{String: str, Binary: bin}, nil
}

// addVersion stores v as a new version with stages (default AWSCURRENT),
// moving AWSCURRENT's previous holder to AWSPREVIOUS. token, if set, is the
// version id; repeating a token with the same value is a no-op, with
// another value an error, as AWS's idempotency works.
func (s *Service) addVersion(sec *secret, v value, token string, stages []string) (string, error) {
	if token == "" {
		token = uuid.NewString()
	} else if len(token) < 32 || len(token) > 64 {
		return "", invalidParam("ClientRequestToken must be 32 to 64 characters long.")
	}
	plain, binary := []byte(nil), v.Binary != nil
	if binary {
		plain = v.Binary
	} else {
		plain = []byte(*v.String)
	}
	if old, ok := sec.Versions[token]; ok {
		got, err := s.Sealer.Open(old.Sealed, bind(sec.ARN, token))
		if err == nil && string(got) == string(plain) && old.Binary == binary {
			return token, nil
		}
		return "", awsapi.Errorf("ResourceExistsException", "You can't modify an existing version, you can only create a new version.")
	}
	if len(stages) == 0 {
		stages = []string{"AWSCURRENT"}
	}
	if sec.Versions == nil {
		sec.Versions = map[string]version{}
	}
	for _, st := range stages {
		for id, ver := range sec.Versions {
			if !slices.Contains(ver.Stages, st) {
				continue
			}
			ver.Stages = slices.DeleteFunc(ver.Stages, func(x string) bool { return x == st })
			if st == "AWSCURRENT" {
				// AWSPREVIOUS moves to the version that was current.
				for id2, v2 := range sec.Versions {
					if id2 != id && slices.Contains(v2.Stages, "AWSPREVIOUS") {
						v2.Stages = slices.DeleteFunc(v2.Stages, func(x string) bool { return x == "AWSPREVIOUS" })
						sec.Versions[id2] = v2
					}
				}
				ver.Stages = append(ver.Stages, "AWSPREVIOUS")
			}
			sec.Versions[id] = ver
		}
	}
	now := s.now()
	sec.Versions[token] = version{Stages: slices.Clone(stages), Created: now, Binary: binary, Sealed: s.Sealer.Seal(plain, bind(sec.ARN, token))}
	sec.VersionOrder = append(sec.VersionOrder, token)
	// Drop the oldest unlabelled versions beyond the limit.
	for len(sec.VersionOrder) > maxVersions {
		dropped := false
		for i, id := range sec.VersionOrder {
			if len(sec.Versions[id].Stages) == 0 {
				delete(sec.Versions, id)
				sec.VersionOrder = append(sec.VersionOrder[:i], sec.VersionOrder[i+1:]...)
				dropped = true
				break
			}
		}
		if !dropped {
			break
		}
	}
	sec.LastChanged = now
	return token, nil
}

// ---- CreateSecret

type createSecretIn struct {
	Name               *string `json:"Name"`
	ClientRequestToken *string `json:"ClientRequestToken"`
	Description        *string `json:"Description"`
	KmsKeyId           *string `json:"KmsKeyId"`
	SecretBinary       []byte  `json:"SecretBinary"`
	SecretString       *string `json:"SecretString"`
	Tags               []tag   `json:"Tags"`
}

type arnNameVersion struct {
	ARN           string   `json:"ARN"`
	Name          string   `json:"Name"`
	VersionId     string   `json:"VersionId,omitempty"`
	VersionStages []string `json:"VersionStages,omitempty"`
	DeletionDate  *epoch   `json:"DeletionDate,omitempty"`
}

func (s *Service) createSecret(ctx context.Context, in *createSecretIn) (*arnNameVersion, error) {
	account, region := scopeOf(ctx)
	name := ecstypes.Deref(in.Name)
	if !nameRE.MatchString(name) {
		return nil, awsapi.Errorf("ValidationException", "Invalid name. Must be a valid name containing alphanumeric characters, or any of the following: -/_+=.@!")
	}
	v, err := checkValue(in.SecretString, in.SecretBinary)
	if err != nil {
		return nil, err
	}
	if err := checkTags(in.Tags); err != nil {
		return nil, err
	}
	var out *arnNameVersion
	err = s.Store.Update(ctx, func(tx state.Tx) error {
		var old secret
		ok, err := tx.Get(kindSecret, docKey(account, region, name), &old)
		if err != nil {
			return err
		}
		if ok && old.DeletionDate != nil && !s.now().Before(*old.DeletionDate) {
			ok = false // past its recovery window: gone
		}
		if ok {
			if old.Deleted != nil {
				return awsapi.Errorf("InvalidRequestException", "You can't create this secret because a secret with this name is already scheduled for deletion.")
			}
			// Repeating the same request (same token, same value) returns it.
			if tok := ecstypes.Deref(in.ClientRequestToken); tok != "" {
				if _, has := old.Versions[tok]; has {
					if _, err := s.addVersion(&old, v, tok, nil); err == nil {
						out = &arnNameVersion{ARN: old.ARN, Name: old.Name, VersionId: tok}
						return nil
					}
				}
			}
			return awsapi.Errorf("ResourceExistsException", "The operation failed because the secret %s already exists.", name)
		}
		now := s.now()
		sec := &secret{
			ARN:  fmt.Sprintf("arn:aws:secretsmanager:%s:%s:secret:%s-%s", region, account, name, randSuffix()),
			Name: name, Description: ecstypes.Deref(in.Description), KmsKeyID: ecstypes.Deref(in.KmsKeyId),
			Tags: in.Tags, Created: now, LastChanged: now,
		}
		out = &arnNameVersion{ARN: sec.ARN, Name: sec.Name}
		if v.present() {
			id, err := s.addVersion(sec, v, ecstypes.Deref(in.ClientRequestToken), nil)
			if err != nil {
				return err
			}
			out.VersionId = id
		}
		return s.put(tx, account, region, sec)
	})
	return out, err
}

func checkTags(tags []tag) error {
	if len(tags) > 50 {
		return awsapi.Errorf("ValidationException", "A secret can have at most 50 tags.")
	}
	for _, t := range tags {
		if k := ecstypes.Deref(t.Key); k == "" || len(k) > 128 {
			return awsapi.Errorf("ValidationException", "Tag keys must be 1 to 128 characters long.")
		}
		if strings.HasPrefix(strings.ToLower(ecstypes.Deref(t.Key)), "aws:") {
			return awsapi.Errorf("ValidationException", "Tag keys may not begin with aws:.")
		}
	}
	return nil
}

// ---- GetSecretValue

type getSecretValueIn struct {
	SecretId     *string `json:"SecretId"`
	VersionId    *string `json:"VersionId"`
	VersionStage *string `json:"VersionStage"`
}

type getSecretValueOut struct {
	ARN           string   `json:"ARN"`
	Name          string   `json:"Name"`
	VersionId     string   `json:"VersionId"`
	SecretBinary  []byte   `json:"SecretBinary,omitempty"`
	SecretString  *string  `json:"SecretString,omitempty"`
	VersionStages []string `json:"VersionStages"`
	CreatedDate   *epoch   `json:"CreatedDate"`
}

func (s *Service) getSecretValue(ctx context.Context, in *getSecretValueIn) (*getSecretValueOut, error) {
	account, region := scopeOf(ctx)
	var out *getSecretValueOut
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		var err error
		out, err = s.readValue(tx, account, region, ecstypes.Deref(in.SecretId), ecstypes.Deref(in.VersionId), ecstypes.Deref(in.VersionStage))
		return err
	})
	return out, err
}

// readValue finds a secret's version and opens it, recording the access
// (by the day, as AWS does). It runs in an Update transaction.
func (s *Service) readValue(tx state.Tx, account, region, id, versionID, stage string) (*getSecretValueOut, error) {
	sec, err := s.find(tx, account, region, id)
	if err != nil {
		return nil, err
	}
	if sec.Deleted != nil {
		return nil, errDeleted()
	}
	if versionID == "" && stage == "" {
		stage = "AWSCURRENT"
	}
	var ver version
	if versionID != "" {
		v, ok := sec.Versions[versionID]
		if !ok {
			return nil, awsapi.Errorf("ResourceNotFoundException", "Secrets Manager can't find the specified secret value for VersionId: %s", versionID)
		}
		if stage != "" && !slices.Contains(v.Stages, stage) {
			return nil, invalidParam("You provided a VersionStage that is not associated to the provided VersionId.")
		}
		ver = v
	} else {
		for id, v := range sec.Versions {
			if slices.Contains(v.Stages, stage) {
				versionID, ver = id, v
			}
		}
		if versionID == "" {
			return nil, awsapi.Errorf("ResourceNotFoundException", "Secrets Manager can't find the specified secret value for staging label: %s", stage)
		}
	}
	plain, err := s.Sealer.Open(ver.Sealed, bind(sec.ARN, versionID))
	if err != nil {
		return nil, awsapi.Errorf("DecryptionFailure", "Secrets Manager can't decrypt the protected secret text using the provided KMS key.")
	}
	out := &getSecretValueOut{ARN: sec.ARN, Name: sec.Name, VersionId: versionID, VersionStages: ver.Stages, CreatedDate: at(ver.Created)}
	if out.VersionStages == nil {
		out.VersionStages = []string{}
	}
	if ver.Binary {
		out.SecretBinary = plain
	} else {
		str := string(plain)
		out.SecretString = &str
	}
	day := s.now().UTC().Truncate(24 * time.Hour)
	if sec.LastAccessed == nil || !sec.LastAccessed.Equal(day) {
		sec.LastAccessed = &day
		if err := s.put(tx, account, region, sec); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ---- PutSecretValue

type putSecretValueIn struct {
	SecretId           *string  `json:"SecretId"`
	ClientRequestToken *string  `json:"ClientRequestToken"`
	SecretBinary       []byte   `json:"SecretBinary"`
	SecretString       *string  `json:"SecretString"`
	VersionStages      []string `json:"VersionStages"`
}

func (s *Service) putSecretValue(ctx context.Context, in *putSecretValueIn) (*arnNameVersion, error) {
	account, region := scopeOf(ctx)
	v, err := checkValue(in.SecretString, in.SecretBinary)
	if err != nil {
		return nil, err
	}
	if !v.present() {
		return nil, invalidParam("You must provide either SecretString or SecretBinary.")
	}
	var out *arnNameVersion
	err = s.Store.Update(ctx, func(tx state.Tx) error {
		sec, err := s.find(tx, account, region, ecstypes.Deref(in.SecretId))
		if err != nil {
			return err
		}
		if sec.Deleted != nil {
			return errDeleted()
		}
		id, err := s.addVersion(sec, v, ecstypes.Deref(in.ClientRequestToken), in.VersionStages)
		if err != nil {
			return err
		}
		out = &arnNameVersion{ARN: sec.ARN, Name: sec.Name, VersionId: id, VersionStages: sec.Versions[id].Stages}
		return s.put(tx, account, region, sec)
	})
	return out, err
}

// ---- UpdateSecret

type updateSecretIn struct {
	SecretId           *string `json:"SecretId"`
	ClientRequestToken *string `json:"ClientRequestToken"`
	Description        *string `json:"Description"`
	KmsKeyId           *string `json:"KmsKeyId"`
	SecretBinary       []byte  `json:"SecretBinary"`
	SecretString       *string `json:"SecretString"`
}

func (s *Service) updateSecret(ctx context.Context, in *updateSecretIn) (*arnNameVersion, error) {
	account, region := scopeOf(ctx)
	v, err := checkValue(in.SecretString, in.SecretBinary)
	if err != nil {
		return nil, err
	}
	var out *arnNameVersion
	err = s.Store.Update(ctx, func(tx state.Tx) error {
		sec, err := s.find(tx, account, region, ecstypes.Deref(in.SecretId))
		if err != nil {
			return err
		}
		if sec.Deleted != nil {
			return errDeleted()
		}
		out = &arnNameVersion{ARN: sec.ARN, Name: sec.Name}
		if in.Description != nil {
			sec.Description = *in.Description
			sec.LastChanged = s.now()
		}
		if in.KmsKeyId != nil {
			sec.KmsKeyID = *in.KmsKeyId
			sec.LastChanged = s.now()
		}
		if v.present() {
			id, err := s.addVersion(sec, v, ecstypes.Deref(in.ClientRequestToken), nil)
			if err != nil {
				return err
			}
			out.VersionId = id
		}
		return s.put(tx, account, region, sec)
	})
	return out, err
}

// ---- DescribeSecret / ListSecrets

type idIn struct {
	SecretId *string `json:"SecretId"`
}

type describeOut struct {
	ARN                string              `json:"ARN"`
	Name               string              `json:"Name"`
	Description        string              `json:"Description,omitempty"`
	KmsKeyId           string              `json:"KmsKeyId,omitempty"`
	RotationEnabled    bool                `json:"RotationEnabled"`
	LastChangedDate    *epoch              `json:"LastChangedDate,omitempty"`
	LastAccessedDate   *epoch              `json:"LastAccessedDate,omitempty"`
	DeletedDate        *epoch              `json:"DeletedDate,omitempty"`
	Tags               []tag               `json:"Tags,omitempty"`
	VersionIdsToStages map[string][]string `json:"VersionIdsToStages,omitempty"`
	// SecretVersionsToStages is ListSecrets' name for VersionIdsToStages.
	SecretVersionsToStages map[string][]string `json:"SecretVersionsToStages,omitempty"`
	CreatedDate            *epoch              `json:"CreatedDate,omitempty"`
}

func describe(sec *secret, list bool) describeOut {
	d := describeOut{
		ARN: sec.ARN, Name: sec.Name, Description: sec.Description, KmsKeyId: sec.KmsKeyID,
		LastChangedDate: at(sec.LastChanged), Tags: sec.Tags, CreatedDate: at(sec.Created),
	}
	if sec.LastAccessed != nil {
		d.LastAccessedDate = at(*sec.LastAccessed)
	}
	if sec.Deleted != nil {
		d.DeletedDate = at(*sec.Deleted)
	}
	stages := map[string][]string{}
	for id, v := range sec.Versions {
		if len(v.Stages) > 0 {
			stages[id] = v.Stages
		}
	}
	if len(stages) > 0 {
		if list {
			d.SecretVersionsToStages = stages
		} else {
			d.VersionIdsToStages = stages
		}
	}
	return d
}

func (s *Service) describeSecret(ctx context.Context, in *idIn) (*describeOut, error) {
	account, region := scopeOf(ctx)
	var out describeOut
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		sec, err := s.find(tx, account, region, ecstypes.Deref(in.SecretId))
		if err != nil {
			return err
		}
		out = describe(sec, false)
		return nil
	})
	return &out, err
}

type filter struct {
	Key    *string  `json:"Key"`
	Values []string `json:"Values"`
}

type listSecretsIn struct {
	IncludePlannedDeletion *bool    `json:"IncludePlannedDeletion"`
	MaxResults             *int32   `json:"MaxResults"`
	NextToken              *string  `json:"NextToken"`
	Filters                []filter `json:"Filters"`
	SortOrder              *string  `json:"SortOrder"`
}

type listSecretsOut struct {
	SecretList []describeOut `json:"SecretList"`
	NextToken  *string       `json:"NextToken,omitempty"`
}

var filterKeys = []string{"description", "name", "tag-key", "tag-value", "primary-region", "owning-service", "all"}

func (s *Service) listSecrets(ctx context.Context, in *listSecretsIn) (*listSecretsOut, error) {
	account, region := scopeOf(ctx)
	max := int(ecstypes.Deref(in.MaxResults))
	if in.MaxResults != nil && (max < 1 || max > 100) {
		return nil, invalidParam("MaxResults must be between 1 and 100.")
	}
	if max == 0 {
		max = 100
	}
	for _, f := range in.Filters {
		if !slices.Contains(filterKeys, ecstypes.Deref(f.Key)) {
			return nil, awsapi.Errorf("ValidationException", "1 validation error detected: Value '%s' at 'filters.1.member.key' failed to satisfy constraint: Member must satisfy enum value set: %v", ecstypes.Deref(f.Key), filterKeys)
		}
		if len(f.Values) == 0 || len(f.Values) > 10 {
			return nil, invalidParam("A filter needs 1 to 10 values.")
		}
	}
	order := ecstypes.Deref(in.SortOrder)
	if order != "" && order != "asc" && order != "desc" {
		return nil, awsapi.Errorf("ValidationException", "SortOrder must be asc or desc.")
	}
	start := 0
	if tok := ecstypes.Deref(in.NextToken); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		n, err2 := strconv.Atoi(string(b))
		if err != nil || err2 != nil || n < 0 {
			return nil, invalidParam("The NextToken value is invalid.")
		}
		start = n
	}
	var all []secret
	err := s.Store.View(ctx, func(tx state.Tx) error {
		var err error
		all, err = state.List[secret](tx, kindSecret, account+"/"+region+"/")
		return err
	})
	if err != nil {
		return nil, err
	}
	now := s.now()
	var hits []secret
	for _, sec := range all {
		if sec.DeletionDate != nil && !now.Before(*sec.DeletionDate) {
			continue
		}
		if sec.Deleted != nil && !ecstypes.Deref(in.IncludePlannedDeletion) {
			continue
		}
		if matches(&sec, in.Filters) {
			hits = append(hits, sec)
		}
	}
	sort.SliceStable(hits, func(i, j int) bool {
		if order == "asc" {
			return hits[i].Created.Before(hits[j].Created)
		}
		return hits[i].Created.After(hits[j].Created)
	})
	out := &listSecretsOut{SecretList: []describeOut{}}
	for i := start; i < len(hits) && i < start+max; i++ {
		out.SecretList = append(out.SecretList, describe(&hits[i], true))
	}
	if start+max < len(hits) {
		tok := base64.RawURLEncoding.EncodeToString([]byte(strconv.Itoa(start + max)))
		out.NextToken = &tok
	}
	return out, nil
}

// matches applies ListSecrets' filters: every filter must match; within a
// filter any value may, a value is a prefix, and a leading ! negates it.
func matches(sec *secret, filters []filter) bool {
	for _, f := range filters {
		key := ecstypes.Deref(f.Key)
		var fields []string
		switch key {
		case "name":
			fields = []string{sec.Name}
		case "description":
			fields = []string{sec.Description}
		case "tag-key", "tag-value", "all":
			for _, t := range sec.Tags {
				if key != "tag-value" {
					fields = append(fields, ecstypes.Deref(t.Key))
				}
				if key != "tag-key" {
					fields = append(fields, ecstypes.Deref(t.Value))
				}
			}
			if key == "all" {
				fields = append(fields, sec.Name, sec.Description)
			}
		case "primary-region", "owning-service":
			fields = nil
		}
		any := false
		for _, v := range f.Values {
			neg := strings.HasPrefix(v, "!")
			v = strings.TrimPrefix(v, "!")
			hit := false
			for _, fv := range fields {
				if key == "all" || key == "name" || key == "description" {
					hit = hit || strings.HasPrefix(strings.ToLower(fv), strings.ToLower(v))
				} else {
					hit = hit || strings.HasPrefix(fv, v)
				}
			}
			if hit != neg {
				any = true
			}
		}
		if !any {
			return false
		}
	}
	return true
}

// ---- ListSecretVersionIds

type listVersionsIn struct {
	SecretId          *string `json:"SecretId"`
	IncludeDeprecated *bool   `json:"IncludeDeprecated"`
	MaxResults        *int32  `json:"MaxResults"`
	NextToken         *string `json:"NextToken"`
}

type versionEntry struct {
	VersionId     string   `json:"VersionId"`
	VersionStages []string `json:"VersionStages,omitempty"`
	CreatedDate   *epoch   `json:"CreatedDate"`
}

type listVersionsOut struct {
	ARN      string         `json:"ARN"`
	Name     string         `json:"Name"`
	Versions []versionEntry `json:"Versions"`
}

func (s *Service) listSecretVersionIds(ctx context.Context, in *listVersionsIn) (*listVersionsOut, error) {
	account, region := scopeOf(ctx)
	var out *listVersionsOut
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		sec, err := s.find(tx, account, region, ecstypes.Deref(in.SecretId))
		if err != nil {
			return err
		}
		out = &listVersionsOut{ARN: sec.ARN, Name: sec.Name, Versions: []versionEntry{}}
		for i := len(sec.VersionOrder) - 1; i >= 0; i-- {
			id := sec.VersionOrder[i]
			v := sec.Versions[id]
			if len(v.Stages) == 0 && !ecstypes.Deref(in.IncludeDeprecated) {
				continue
			}
			out.Versions = append(out.Versions, versionEntry{VersionId: id, VersionStages: v.Stages, CreatedDate: at(v.Created)})
		}
		return nil
	})
	return out, err
}

// ---- DeleteSecret / RestoreSecret

type deleteSecretIn struct {
	SecretId                   *string `json:"SecretId"`
	RecoveryWindowInDays       *int64  `json:"RecoveryWindowInDays"`
	ForceDeleteWithoutRecovery *bool   `json:"ForceDeleteWithoutRecovery"`
}

func (s *Service) deleteSecret(ctx context.Context, in *deleteSecretIn) (*arnNameVersion, error) {
	account, region := scopeOf(ctx)
	force := ecstypes.Deref(in.ForceDeleteWithoutRecovery)
	if force && in.RecoveryWindowInDays != nil {
		return nil, invalidParam("You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays.")
	}
	days := int64(30)
	if in.RecoveryWindowInDays != nil {
		days = *in.RecoveryWindowInDays
		if days < 7 || days > 30 {
			return nil, invalidParam("The RecoveryWindowInDays value must be between 7 and 30 days (inclusive).")
		}
	}
	var out *arnNameVersion
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		sec, err := s.find(tx, account, region, ecstypes.Deref(in.SecretId))
		if err != nil {
			return err
		}
		now := s.now()
		if force {
			if _, err := tx.Delete(kindSecret, docKey(account, region, sec.Name)); err != nil {
				return err
			}
			out = &arnNameVersion{ARN: sec.ARN, Name: sec.Name, DeletionDate: at(now)}
			return nil
		}
		if sec.Deleted != nil {
			return awsapi.Errorf("InvalidRequestException", "You can't delete secret %s that is already scheduled for deletion.", sec.Name)
		}
		when := now.Add(time.Duration(days) * 24 * time.Hour)
		sec.Deleted, sec.DeletionDate = &now, &when
		out = &arnNameVersion{ARN: sec.ARN, Name: sec.Name, DeletionDate: at(when)}
		return s.put(tx, account, region, sec)
	})
	return out, err
}

func (s *Service) restoreSecret(ctx context.Context, in *idIn) (*arnNameVersion, error) {
	account, region := scopeOf(ctx)
	var out *arnNameVersion
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		sec, err := s.find(tx, account, region, ecstypes.Deref(in.SecretId))
		if err != nil {
			return err
		}
		sec.Deleted, sec.DeletionDate = nil, nil
		out = &arnNameVersion{ARN: sec.ARN, Name: sec.Name}
		return s.put(tx, account, region, sec)
	})
	return out, err
}

// ---- TagResource / UntagResource

type tagIn struct {
	SecretId *string  `json:"SecretId"`
	Tags     []tag    `json:"Tags"`
	TagKeys  []string `json:"TagKeys"`
}

type empty struct{}

func (s *Service) tagResource(ctx context.Context, in *tagIn) (*empty, error) {
	if err := checkTags(in.Tags); err != nil {
		return nil, err
	}
	return s.changeTags(ctx, in, func(sec *secret) error {
		for _, t := range in.Tags {
			i := slices.IndexFunc(sec.Tags, func(x tag) bool { return ecstypes.Deref(x.Key) == ecstypes.Deref(t.Key) })
			if i >= 0 {
				sec.Tags[i] = t
			} else {
				sec.Tags = append(sec.Tags, t)
			}
		}
		return checkTags(sec.Tags)
	})
}

func (s *Service) untagResource(ctx context.Context, in *tagIn) (*empty, error) {
	return s.changeTags(ctx, in, func(sec *secret) error {
		sec.Tags = slices.DeleteFunc(sec.Tags, func(x tag) bool { return slices.Contains(in.TagKeys, ecstypes.Deref(x.Key)) })
		return nil
	})
}

func (s *Service) changeTags(ctx context.Context, in *tagIn, change func(*secret) error) (*empty, error) {
	account, region := scopeOf(ctx)
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		sec, err := s.find(tx, account, region, ecstypes.Deref(in.SecretId))
		if err != nil {
			return err
		}
		if sec.Deleted != nil {
			return errDeleted()
		}
		if err := change(sec); err != nil {
			return err
		}
		return s.put(tx, account, region, sec)
	})
	if err != nil {
		return nil, err
	}
	return &empty{}, nil
}
