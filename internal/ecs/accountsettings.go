package ecs

import (
	"context"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/model"
	"github.com/gantry-dev/gantry/internal/state"
)

// accountSettingRule is what ECS allows for one account setting.
type accountSettingRule struct {
	values []string
	// dflt is what a new AWS account shows before anyone sets it.
	dflt string
	// defaultOnly settings can only be set account-wide
	// (PutAccountSettingDefault or the root principal).
	defaultOnly bool
	// readOnly settings are managed by AWS.
	readOnly bool
}

var (
	onOff           = []string{"enabled", "disabled"}
	accountSettings = map[string]accountSettingRule{
		"serviceLongArnFormat":            {values: onOff, dflt: "enabled"},
		"taskLongArnFormat":               {values: onOff, dflt: "enabled"},
		"containerInstanceLongArnFormat":  {values: onOff, dflt: "enabled"},
		"awsvpcTrunking":                  {values: onOff, dflt: "disabled"},
		"containerInsights":               {values: []string{"enabled", "disabled", "enhanced"}, dflt: "disabled"},
		"fargateFIPSMode":                 {values: onOff, dflt: "disabled", defaultOnly: true},
		"tagResourceAuthorization":        {values: []string{"on", "off"}, dflt: "on"},
		"fargateTaskRetirementWaitPeriod": {values: []string{"0", "7", "14"}, dflt: "7", defaultOnly: true},
		"guardDutyActivate":               {values: onOff, dflt: "disabled", readOnly: true},
		"defaultLogDriverMode":            {values: []string{"blocking", "non-blocking"}, dflt: "non-blocking"},
		"fargateEventWindows":             {values: onOff, dflt: "disabled"},
	}
)

var principalRE = regexp.MustCompile(`^arn:aws[a-z-]*:iam::(\d{12}):(root|user/.+|role/.+)$`)

func (s *Service) accountSettingOps() map[string]awsapi.Handler {
	return map[string]awsapi.Handler{
		"ListAccountSettings":      awsapi.Op(s.listAccountSettings),
		"PutAccountSetting":        awsapi.Op(s.putAccountSetting),
		"PutAccountSettingDefault": awsapi.Op(s.putAccountSettingDefault),
		"DeleteAccountSetting":     awsapi.Op(s.deleteAccountSetting),
	}
}

func rootPrincipal(sc model.Scope) string { return "arn:aws:iam::" + sc.Account + ":root" }

// principalOf resolves a request's principalArn: the caller when omitted.
// Gantry's credentials are the account's own, so the caller is its root.
func principalOf(sc model.Scope, arn *string) (string, error) {
	p := ecstypes.Deref(arn)
	if p == "" {
		return rootPrincipal(sc), nil
	}
	m := principalRE.FindStringSubmatch(p)
	if m == nil {
		return "", awsapi.InvalidParameter("principalArn '%s' is not a valid IAM user, role or root ARN.", p)
	}
	if m[1] != sc.Account {
		return "", awsapi.InvalidParameter("principalArn '%s' belongs to another account.", p)
	}
	return p, nil
}

func settingKey(sc model.Scope, principal, name string) string {
	return sc.Prefix() + principal + "/" + name
}

func checkSettingName(name *string) (accountSettingRule, error) {
	rule, ok := accountSettings[ecstypes.Deref(name)]
	if !ok {
		return rule, awsapi.InvalidParameter("%s should be one of [%s]", ecstypes.Deref(name), strings.Join(ecstypes.Enums["SettingName"], ","))
	}
	return rule, nil
}

func checkSettingValue(name string, rule accountSettingRule, value *string) error {
	if rule.readOnly {
		return awsapi.InvalidParameter("The %s account setting is read-only and managed by AWS.", name)
	}
	if !slices.Contains(rule.values, ecstypes.Deref(value)) {
		return awsapi.InvalidParameter("Invalid value '%s' for the %s account setting. Valid values: %s.", ecstypes.Deref(value), name, strings.Join(rule.values, ", "))
	}
	return nil
}

// storedSetting returns the setting a principal set itself, or nil.
func storedSetting(tx state.Tx, sc model.Scope, principal, name string) (*ecstypes.Setting, error) {
	var st ecstypes.Setting
	ok, err := tx.Get(model.KindAccountSetting, settingKey(sc, principal, name), &st)
	if err != nil || !ok {
		return nil, err
	}
	return &st, nil
}

// effectiveSetting is what applies to principal: its own setting, else the
// account default (the root's), else AWS's default.
func effectiveSetting(tx state.Tx, sc model.Scope, principal, name string) (*ecstypes.Setting, error) {
	for _, p := range []string{principal, rootPrincipal(sc)} {
		st, err := storedSetting(tx, sc, p, name)
		if err != nil || st != nil {
			return st, err
		}
	}
	return &ecstypes.Setting{
		Name:         ecstypes.String(name),
		Value:        ecstypes.String(accountSettings[name].dflt),
		PrincipalArn: ecstypes.String(rootPrincipal(sc)),
		Type_:        ecstypes.String("aws_managed"),
	}, nil
}

// EffectiveAccountSetting returns the value of an account setting that
// applies to principal ("" for the caller), for other operations that follow
// one (containerInsights for new clusters, tagResourceAuthorization, ...).
func EffectiveAccountSetting(tx state.Tx, sc model.Scope, principal, name string) (string, error) {
	if principal == "" {
		principal = rootPrincipal(sc)
	}
	st, err := effectiveSetting(tx, sc, principal, name)
	if err != nil {
		return "", err
	}
	return ecstypes.Deref(st.Value), nil
}

func (s *Service) putSetting(ctx context.Context, principal string, name, value *string) (*ecstypes.Setting, error) {
	sc := scopeOf(ctx)
	rule, err := checkSettingName(name)
	if err != nil {
		return nil, err
	}
	if err := checkSettingValue(*name, rule, value); err != nil {
		return nil, err
	}
	if rule.defaultOnly && principal != rootPrincipal(sc) {
		return nil, awsapi.InvalidParameter("The %s account setting can only be changed for the whole account: use PutAccountSettingDefault.", *name)
	}
	st := &ecstypes.Setting{Name: name, Value: value, PrincipalArn: ecstypes.String(principal), Type_: ecstypes.String("user")}
	err = s.Store.Update(ctx, func(tx state.Tx) error {
		return tx.Put(model.KindAccountSetting, settingKey(sc, principal, *name), st)
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}

func (s *Service) putAccountSetting(ctx context.Context, in *ecstypes.PutAccountSettingRequest) (*ecstypes.PutAccountSettingResponse, error) {
	principal, err := principalOf(scopeOf(ctx), in.PrincipalArn)
	if err != nil {
		return nil, err
	}
	st, err := s.putSetting(ctx, principal, in.Name, in.Value)
	if err != nil {
		return nil, err
	}
	return &ecstypes.PutAccountSettingResponse{Setting: st}, nil
}

func (s *Service) putAccountSettingDefault(ctx context.Context, in *ecstypes.PutAccountSettingDefaultRequest) (*ecstypes.PutAccountSettingDefaultResponse, error) {
	st, err := s.putSetting(ctx, rootPrincipal(scopeOf(ctx)), in.Name, in.Value)
	if err != nil {
		return nil, err
	}
	return &ecstypes.PutAccountSettingDefaultResponse{Setting: st}, nil
}

func (s *Service) deleteAccountSetting(ctx context.Context, in *ecstypes.DeleteAccountSettingRequest) (*ecstypes.DeleteAccountSettingResponse, error) {
	sc := scopeOf(ctx)
	if _, err := checkSettingName(in.Name); err != nil {
		return nil, err
	}
	principal, err := principalOf(sc, in.PrincipalArn)
	if err != nil {
		return nil, err
	}
	var out *ecstypes.Setting
	err = s.Store.Update(ctx, func(tx state.Tx) error {
		st, err := storedSetting(tx, sc, principal, *in.Name)
		if err != nil {
			return err
		}
		if st == nil {
			// Nothing to delete: answer what applies, as ECS does.
			out, err = effectiveSetting(tx, sc, principal, *in.Name)
			return err
		}
		out = st
		_, err = tx.Delete(model.KindAccountSetting, settingKey(sc, principal, *in.Name))
		return err
	})
	if err != nil {
		return nil, err
	}
	return &ecstypes.DeleteAccountSettingResponse{Setting: out}, nil
}

func (s *Service) listAccountSettings(ctx context.Context, in *ecstypes.ListAccountSettingsRequest) (*ecstypes.ListAccountSettingsResponse, error) {
	sc := scopeOf(ctx)
	if in.Name != nil {
		if _, err := checkSettingName(in.Name); err != nil {
			return nil, err
		}
	}
	if in.Value != nil && in.Name == nil {
		return nil, awsapi.InvalidParameter("value can only be specified together with name.")
	}
	principal, err := principalOf(sc, in.PrincipalArn)
	if err != nil {
		return nil, err
	}
	limit := 10
	if in.MaxResults != nil {
		if *in.MaxResults < 1 || *in.MaxResults > 10 {
			return nil, awsapi.InvalidParameter("maxResults must be between 1 and 10.")
		}
		limit = int(*in.MaxResults)
	}
	start := 0
	if in.NextToken != nil && *in.NextToken != "" {
		tok, ok := model.DecodeToken(in.NextToken)
		n, err := strconv.Atoi(tok)
		if !ok || err != nil || n < 0 {
			return nil, awsapi.InvalidParameter("Invalid token %s", *in.NextToken)
		}
		start = n
	}
	var all []*ecstypes.Setting
	err = s.Store.View(ctx, func(tx state.Tx) error {
		for _, name := range ecstypes.Enums["SettingName"] {
			if _, known := accountSettings[name]; !known || (in.Name != nil && *in.Name != name) {
				continue
			}
			var st *ecstypes.Setting
			var err error
			if ecstypes.Deref(in.EffectiveSettings) {
				st, err = effectiveSetting(tx, sc, principal, name)
			} else {
				st, err = storedSetting(tx, sc, principal, name)
			}
			if err != nil {
				return err
			}
			if st != nil && (in.Value == nil || *in.Value == ecstypes.Deref(st.Value)) {
				all = append(all, st)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := &ecstypes.ListAccountSettingsResponse{Settings: []*ecstypes.Setting{}}
	if start < len(all) {
		end := min(start+limit, len(all))
		out.Settings = all[start:end]
		if end < len(all) {
			out.NextToken = ecstypes.String(model.EncodeToken(strconv.Itoa(end)))
		}
	}
	return out, nil
}
