package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// KeyFile is where a data directory keeps the key that seals secret values:
// beside the state database, never in it, so a copy of the database (or a
// shared PostgreSQL) alone reveals no secret.
func KeyFile(dataDir string) string { return filepath.Join(dataDir, "secrets.key") }

// Sealer encrypts values with AES-256-GCM. Every value is bound to where it
// belongs (its secret's ARN and version, or its parameter's ARN and
// version) as additional data, so a sealed value moved to another record in
// the database does not open.
type Sealer struct{ aead cipher.AEAD }

// LoadOrCreateKey reads the 32-byte key at path, creating it (mode 0600)
// when absent. A key file that exists but is unreadable or of another size
// is an error: making a new one would lose every stored secret.
func LoadOrCreateKey(path string) (*Sealer, error) {
	key, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("secrets key: %w", err)
		}
		if _, err := f.Write(key); err != nil {
			f.Close()
			os.Remove(path)
			return nil, fmt.Errorf("secrets key: %w", err)
		}
		if err := f.Close(); err != nil {
			return nil, fmt.Errorf("secrets key: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("secrets key: %w", err)
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("secrets key %s: %d bytes, want 32 (the file is damaged; restore it from a backup)", path, len(key))
	}
	return NewSealer(key)
}

// NewSealer makes a Sealer from a 32-byte key.
func NewSealer(key []byte) (*Sealer, error) {
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

// Seal encrypts plain for the record named by bind: nonce || ciphertext.
func (s *Sealer) Seal(plain []byte, bind string) []byte {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return s.aead.Seal(nonce, nonce, plain, []byte(bind))
}

// Open decrypts what Seal made for the same bind.
func (s *Sealer) Open(sealed []byte, bind string) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return nil, errors.New("sealed value too short")
	}
	out, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte(bind))
	if err != nil {
		return nil, errors.New("sealed value does not open with this server's secrets key")
	}
	return out, nil
}
