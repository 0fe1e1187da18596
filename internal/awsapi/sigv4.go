package awsapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// Identity is who signed a request, as established by Verify.
type Identity struct {
	AccessKey string
	Account   string
	Region    string
	Service   string // the signing name from the credential scope: ecs, ec2, logs, ...
	// ARN and UserID name the principal when the key store knows it
	// (PrincipalStore): arn:aws:iam::ACCOUNT:root, .../user/NAME or
	// arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION. Empty means root.
	ARN    string
	UserID string
}

// Principal is what a PrincipalStore knows about an access key.
type Principal struct {
	Secret, Account string
	ARN, UserID     string
	// SessionToken, if set, must come with the request as
	// X-Amz-Security-Token (temporary credentials).
	SessionToken string
	Expired      bool
}

// PrincipalStore is a KeyStore that also names a key's principal; Verify
// prefers it when the store implements it.
type PrincipalStore interface {
	LookupPrincipal(accessKey string) (Principal, bool)
}

// KeyStore resolves an access key id to its secret and owning account.
type KeyStore interface {
	LookupKey(accessKey string) (secret, account string, ok bool)
}

// MaxSkew is how far X-Amz-Date may be from the server's clock, as AWS allows.
const MaxSkew = 5 * time.Minute

// Signature failures, named as AWS's JSON services name them. Query services
// (EC2, IAM, ...) translate these codes to their own.
const (
	CodeMissingAuth  = "MissingAuthenticationTokenException"
	CodeUnknownKey   = "UnrecognizedClientException"
	CodeBadSignature = "InvalidSignatureException"
	CodeIncomplete   = "IncompleteSignatureException"
)

// Verify checks a request's SigV4 Authorization header against ks. The body
// must be the full request body (already read). The signature is recomputed
// with aws-sdk-go-v2's signer over exactly the headers the client signed, so
// canonicalisation follows the SDK rather than a hand-written copy of it.
func Verify(r *http.Request, body []byte, ks KeyStore, now time.Time) (*Identity, *Error) {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		if r.URL.Query().Get("X-Amz-Signature") != "" {
			return nil, &Error{Code: CodeIncomplete, Message: "Presigned requests are not supported on this endpoint.", Status: 403}
		}
		return nil, &Error{Code: CodeMissingAuth, Message: "Missing Authentication Token", Status: 403}
	}
	const algo = "AWS4-HMAC-SHA256 "
	if !strings.HasPrefix(auth, algo) {
		return nil, &Error{Code: CodeIncomplete, Message: "Authorization header requires the AWS4-HMAC-SHA256 algorithm.", Status: 403}
	}
	fields := map[string]string{}
	for _, part := range strings.Split(auth[len(algo):], ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if ok {
			fields[k] = v
		}
	}
	cred, signedHeaders, sig := fields["Credential"], fields["SignedHeaders"], fields["Signature"]
	scope := strings.Split(cred, "/")
	if len(scope) != 5 || scope[4] != "aws4_request" || signedHeaders == "" || sig == "" {
		return nil, &Error{Code: CodeIncomplete, Message: "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters with a Credential of the form KEY/DATE/REGION/SERVICE/aws4_request. Authorization=" + auth, Status: 403}
	}
	id := &Identity{AccessKey: scope[0], Region: scope[2], Service: scope[3]}
	var secret, account string
	var ok bool
	if ps, isPS := ks.(PrincipalStore); isPS {
		var p Principal
		p, ok = ps.LookupPrincipal(id.AccessKey)
		if ok && p.SessionToken != "" {
			tok := r.Header.Get("X-Amz-Security-Token")
			if subtle.ConstantTimeCompare([]byte(tok), []byte(p.SessionToken)) != 1 {
				ok = false
			} else if p.Expired {
				return nil, &Error{Code: "ExpiredTokenException", Message: "The security token included in the request is expired", Status: 403}
			}
		}
		secret, account, id.ARN, id.UserID = p.Secret, p.Account, p.ARN, p.UserID
	} else {
		secret, account, ok = ks.LookupKey(id.AccessKey)
	}
	if !ok {
		return nil, &Error{Code: CodeUnknownKey, Message: "The security token included in the request is invalid.", Status: 403}
	}
	id.Account = account

	amzDate := r.Header.Get("X-Amz-Date")
	signedAt, err := time.Parse("20060102T150405Z", amzDate)
	if err != nil {
		return nil, &Error{Code: CodeIncomplete, Message: "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.", Status: 403}
	}
	if signedAt.Format("20060102") != scope[1] {
		return nil, &Error{Code: CodeBadSignature, Message: "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '" + scope[1] + "' != '" + signedAt.Format("20060102") + "'", Status: 403}
	}
	if d := now.Sub(signedAt); d > MaxSkew || d < -MaxSkew {
		const f = "20060102T150405Z"
		var msg string
		if d > 0 {
			msg = "Signature expired: " + amzDate + " is now earlier than " + now.Add(-MaxSkew).UTC().Format(f) + " (" + now.UTC().Format(f) + " - 5 min.)"
		} else {
			msg = "Signature not yet current: " + amzDate + " is still later than " + now.Add(MaxSkew).UTC().Format(f) + " (" + now.UTC().Format(f) + " + 5 min.)"
		}
		return nil, &Error{Code: CodeBadSignature, Message: msg, Status: 403}
	}

	sum := sha256.Sum256(body)
	payloadHash := hex.EncodeToString(sum[:])
	if h := r.Header.Get("X-Amz-Content-Sha256"); h != "" && h != "UNSIGNED-PAYLOAD" && h != payloadHash {
		return nil, &Error{Code: CodeBadSignature, Message: "The provided 'x-amz-content-sha256' header does not match what was computed.", Status: 400}
	}

	// Rebuild the request with only the headers the client signed.
	cp, err := http.NewRequest(r.Method, r.URL.String(), bytes.NewReader(nil))
	if err != nil {
		return nil, &Error{Code: CodeIncomplete, Message: err.Error(), Status: 400}
	}
	cp.URL.Host = r.Host
	cp.Host = r.Host
	cp.ContentLength = 0
	for _, h := range strings.Split(signedHeaders, ";") {
		switch h {
		case "host":
		case "content-length":
			cp.ContentLength = int64(len(body))
		default:
			for _, v := range r.Header.Values(h) {
				cp.Header.Add(h, v)
			}
		}
	}
	signer := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = id.Service == "s3" })
	err = signer.SignHTTP(context.Background(), aws.Credentials{AccessKeyID: id.AccessKey, SecretAccessKey: secret, SessionToken: r.Header.Get("X-Amz-Security-Token")},
		cp, payloadHash, id.Service, id.Region, signedAt)
	if err != nil {
		return nil, &Error{Code: CodeIncomplete, Message: err.Error(), Status: 400}
	}
	want := ""
	for _, part := range strings.Split(strings.TrimPrefix(cp.Header.Get("Authorization"), algo), ",") {
		if k, v, _ := strings.Cut(strings.TrimSpace(part), "="); k == "Signature" {
			want = v
		}
	}
	if subtle.ConstantTimeCompare([]byte(want), []byte(sig)) != 1 {
		return nil, &Error{Code: CodeBadSignature, Message: "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.", Status: 403}
	}
	return id, nil
}

type identityKey struct{}

// WithIdentity returns ctx carrying the verified caller.
func WithIdentity(ctx context.Context, id *Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// IdentityFrom returns the verified caller of the request in ctx.
func IdentityFrom(ctx context.Context) *Identity {
	id, _ := ctx.Value(identityKey{}).(*Identity)
	if id == nil {
		return &Identity{}
	}
	return id
}
