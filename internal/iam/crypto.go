package iam

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// KeyFileName is the file in the data directory holding the 256-bit key that
// encrypts secret access keys in the state database. It is kept out of the
// database on purpose: a copy or dump of state.db alone reveals no secret.
const KeyFileName = "identity.key"

// Sealer encrypts secrets with AES-256-GCM. SigV4 needs the secret itself
// to recompute signatures, so secrets cannot be hashed: they are encrypted.
type Sealer struct{ aead cipher.AEAD }

// OpenSealer reads dataDir's key file, creating it (mode 0600) if create is
// set and it does not exist.
func OpenSealer(dataDir string, create bool) (*Sealer, error) {
	path := filepath.Join(dataDir, KeyFileName)
	key, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return OpenSealer(dataDir, false) // another process made it first
		}
		if err != nil {
			return nil, err
		}
		_, werr := f.Write(key)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return nil, werr
		}
	} else if err != nil {
		return nil, fmt.Errorf("secret key file: %w", err)
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("%s: want 32 bytes, have %d", path, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead}, nil
}

// Seal encrypts plain, binding it to context (the access key id) so a
// ciphertext cannot be moved to another key's record.
func (s *Sealer) Seal(plain, context string) string {
	nonce := make([]byte, s.aead.NonceSize())
	rand.Read(nonce)
	return base64.StdEncoding.EncodeToString(s.aead.Seal(nonce, nonce, []byte(plain), []byte(context)))
}

// Open decrypts what Seal made for the same context.
func (s *Sealer) Open(sealed, context string) (string, error) {
	b, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil || len(b) < s.aead.NonceSize() {
		return "", errors.New("sealed secret is malformed")
	}
	n := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, b[:n], b[n:], []byte(context))
	if err != nil {
		return "", errors.New("sealed secret does not decrypt with this data directory's key")
	}
	return string(plain), nil
}
