package server

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/gantry-dev/gantry/internal/iam"
	"github.com/gantry-dev/gantry/internal/state"
)

// Credentials are the local account's access key, made at first start and
// kept in DataDir/credentials.json (mode 0600) for `gantry env` to print.
type Credentials struct {
	AccountID       string `json:"accountId"`
	AccessKeyID     string `json:"accessKeyId"`
	SecretAccessKey string `json:"secretAccessKey"`
	Region          string `json:"region"`
}

// CredentialsPath is where a data directory keeps its credentials.
func CredentialsPath(dataDir string) string { return filepath.Join(dataDir, "credentials.json") }

// LoadCredentials reads the credentials of an initialised data directory.
func LoadCredentials(dataDir string) (*Credentials, error) {
	b, err := os.ReadFile(CredentialsPath(dataDir))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("no credentials in %s: start `gantry server --data-dir %s` once to create them", dataDir, dataDir)
		}
		return nil, err
	}
	var c Credentials
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", CredentialsPath(dataDir), err)
	}
	return &c, nil
}

func loadOrCreateCredentials(dataDir, accountID, region string) (*Credentials, error) {
	c, err := LoadCredentials(dataDir)
	if err == nil {
		return c, nil
	}
	if _, statErr := os.Stat(CredentialsPath(dataDir)); statErr == nil {
		return nil, err // present but unreadable: never overwrite keys users copied
	}
	c = &Credentials{AccountID: accountID, Region: region,
		AccessKeyID:     "AKIA" + randomString(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"),
		SecretAccessKey: randomString(40, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"),
	}
	b, _ := json.MarshalIndent(c, "", "  ")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	tmp := CredentialsPath(dataDir) + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return nil, err
	}
	return c, os.Rename(tmp, CredentialsPath(dataDir))
}

func randomString(n int, alphabet string) string {
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// openIdentities opens the account and key store (internal/iam) and, on an
// install from before accounts, imports credentials.json's key pair as the
// default account's root key. credentials.json stays as it is, so `gantry
// env` without flags and existing scripts keep working.
func openIdentities(ctx context.Context, dataDir string, store state.Store, creds *Credentials) (*iam.Store, error) {
	sealer, err := iam.OpenSealer(dataDir, true)
	if err != nil {
		return nil, err
	}
	ids := &iam.Store{State: store, Sealer: sealer}
	if err := ids.Bootstrap(ctx, creds.AccountID, creds.AccessKeyID, creds.SecretAccessKey); err != nil {
		return nil, fmt.Errorf("accounts: %w", err)
	}
	return ids, nil
}

// iamActionPrefix maps JSON target prefixes to IAM service prefixes, for
// the actions policies name.
var iamActionPrefix = map[string]string{
	"AmazonEC2ContainerServiceV20141113":   "ecs",
	"AmazonEC2ContainerRegistry_V20150921": "ecr",
	"Logs_20140328":                        "logs",
	"AWSInsightsIndexService":              "ce",
	"GantryBilling":                        "gantry",
	"GraniteServiceVersion20100801":        "cloudwatch",
	"secretsmanager":                       "secretsmanager",
	"AmazonSSM":                            "ssm",
}
