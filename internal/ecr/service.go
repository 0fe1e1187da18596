// Package ecr is the Amazon ECR API (JSON 1.1) over the repositories of
// Gantry's registry (internal/registry).
package ecr

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/gantry-dev/gantry/internal/awsapi"
	"github.com/gantry-dev/gantry/internal/ecr/ecrtypes"
	"github.com/gantry-dev/gantry/internal/ecs/ecstypes"
	"github.com/gantry-dev/gantry/internal/registry"
	"github.com/gantry-dev/gantry/internal/state"
)

// TargetPrefix is ECR's X-Amz-Target prefix.
const TargetPrefix = "AmazonEC2ContainerRegistry_V20150921"

// Service answers the ECR API for the registry's account and region.
type Service struct {
	Store    state.Store
	Registry *registry.Registry
	// Host is the registry's address as clients reach it (HOST:PORT); it is
	// what repositoryUri and proxyEndpoint name, because the AWS-style
	// ACCOUNT.dkr.ecr.REGION.amazonaws.com does not resolve to this host.
	Host string
	Log  *slog.Logger
}

// JSON is the service's JSON 1.1 dispatcher.
func (s *Service) JSON() *awsapi.JSONService {
	return &awsapi.JSONService{TargetPrefix: TargetPrefix, Log: s.Log, Ops: map[string]awsapi.Handler{
		"CreateRepository":      awsapi.Op(s.CreateRepository),
		"DescribeRepositories":  awsapi.Op(s.DescribeRepositories),
		"DeleteRepository":      awsapi.Op(s.DeleteRepository),
		"ListImages":            awsapi.Op(s.ListImages),
		"DescribeImages":        awsapi.Op(s.DescribeImages),
		"BatchGetImage":         awsapi.Op(s.BatchGetImage),
		"BatchDeleteImage":      awsapi.Op(s.BatchDeleteImage),
		"PutImageTagMutability": awsapi.Op(s.PutImageTagMutability),
		"GetAuthorizationToken": awsapi.Op(s.GetAuthorizationToken),
		"PutLifecyclePolicy":    awsapi.Op(s.PutLifecyclePolicy),
		"GetLifecyclePolicy":    awsapi.Op(s.GetLifecyclePolicy),
		"DeleteLifecyclePolicy": awsapi.Op(s.DeleteLifecyclePolicy),
	}}
}

var deref = ecstypes.Deref[string]

func ptr[T any](v T) *T { return &v }

func (s *Service) account() string { return s.Registry.Account }

func (s *Service) checkRegistry(id *string) error {
	if id != nil && *id != s.account() {
		return awsapi.InvalidParameter("Invalid parameter at 'registryId' failed to satisfy constraint: this endpoint serves registry %s only", s.account())
	}
	return nil
}

func (s *Service) repoKey(name string) string {
	return registry.RepoKey(s.account(), s.Registry.Region, name)
}

func repoNotFound(name, account string) error {
	return awsapi.Errorf("RepositoryNotFoundException", "The repository with name '%s' does not exist in the registry with id '%s'", name, account)
}

// getRepo validates the name and loads the repository.
func (s *Service) getRepo(tx state.Tx, registryID, name *string) (string, *registry.Repository, error) {
	if err := s.checkRegistry(registryID); err != nil {
		return "", nil, err
	}
	n := deref(name)
	if n == "" {
		return "", nil, awsapi.InvalidParameter("Invalid parameter at 'repositoryName' failed to satisfy constraint: 'Member must not be null'")
	}
	if !registry.ValidRepositoryName(n) {
		return "", nil, invalidName(n)
	}
	key := s.repoKey(n)
	var repo registry.Repository
	ok, err := tx.Get(registry.KindRepository, key, &repo)
	if err != nil {
		return "", nil, err
	}
	if !ok {
		return "", nil, repoNotFound(n, s.account())
	}
	return key, &repo, nil
}

func invalidName(n string) error {
	return awsapi.InvalidParameter("Invalid parameter at 'repositoryName' failed to satisfy constraint: 'must satisfy regular expression '(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*' and be 2 to 256 characters long' (got %q)", n)
}

func (s *Service) repoShape(r *registry.Repository) *ecrtypes.Repository {
	enc := r.EncryptionType
	if enc == "" {
		enc = "AES256"
	}
	out := &ecrtypes.Repository{
		CreatedAt:                  ecstypes.At(r.CreatedAt),
		EncryptionConfiguration:    &ecrtypes.EncryptionConfiguration{EncryptionType: ptr(enc)},
		ImageScanningConfiguration: &ecrtypes.ImageScanningConfiguration{ScanOnPush: ptr(r.ScanOnPush)},
		ImageTagMutability:         ptr(r.TagMutability),
		RegistryId:                 ptr(s.account()),
		RepositoryArn:              ptr("arn:aws:ecr:" + s.Registry.Region + ":" + s.account() + ":repository/" + r.Name),
		RepositoryName:             ptr(r.Name),
		RepositoryUri:              ptr(s.Host + "/" + r.Name),
	}
	if r.KMSKey != "" {
		out.EncryptionConfiguration.KmsKey = ptr(r.KMSKey)
	}
	return out
}

func (s *Service) CreateRepository(ctx context.Context, in *ecrtypes.CreateRepositoryRequest) (*ecrtypes.CreateRepositoryResponse, error) {
	if err := s.checkRegistry(in.RegistryId); err != nil {
		return nil, err
	}
	name := deref(in.RepositoryName)
	if !registry.ValidRepositoryName(name) {
		return nil, invalidName(name)
	}
	mut, err := mutability(in.ImageTagMutability)
	if err != nil {
		return nil, err
	}
	repo := &registry.Repository{Name: name, CreatedAt: time.Now().UTC(), TagMutability: mut}
	if c := in.ImageScanningConfiguration; c != nil && c.ScanOnPush != nil {
		repo.ScanOnPush = *c.ScanOnPush
	}
	if c := in.EncryptionConfiguration; c != nil {
		switch t := deref(c.EncryptionType); t {
		case "AES256", "KMS", "KMS_DSSE":
			repo.EncryptionType, repo.KMSKey = t, deref(c.KmsKey)
		default:
			return nil, awsapi.InvalidParameter("Invalid parameter at 'encryptionConfiguration.encryptionType' failed to satisfy constraint: 'Member must satisfy enum value set: [AES256, KMS, KMS_DSSE]'")
		}
	}
	for _, t := range in.Tags {
		if repo.Tags == nil {
			repo.Tags = map[string]string{}
		}
		repo.Tags[deref(t.Key)] = deref(t.Value)
	}
	err = s.Store.Update(ctx, func(tx state.Tx) error {
		ok, err := tx.Get(registry.KindRepository, s.repoKey(name), &registry.Repository{})
		if err != nil {
			return err
		}
		if ok {
			return awsapi.Errorf("RepositoryAlreadyExistsException", "The repository with name '%s' already exists in the registry with id '%s'", name, s.account())
		}
		return tx.Put(registry.KindRepository, s.repoKey(name), repo)
	})
	if err != nil {
		return nil, err
	}
	return &ecrtypes.CreateRepositoryResponse{Repository: s.repoShape(repo)}, nil
}

func mutability(m *string) (string, error) {
	switch v := deref(m); v {
	case "":
		return "MUTABLE", nil
	case "MUTABLE", "IMMUTABLE":
		return v, nil
	default:
		return "", awsapi.InvalidParameter("Invalid parameter at 'imageTagMutability' failed to satisfy constraint: 'Member must satisfy enum value set: [MUTABLE, IMMUTABLE]'")
	}
}

func (s *Service) DescribeRepositories(ctx context.Context, in *ecrtypes.DescribeRepositoriesRequest) (*ecrtypes.DescribeRepositoriesResponse, error) {
	if err := s.checkRegistry(in.RegistryId); err != nil {
		return nil, err
	}
	limit, err := maxResults(in.MaxResults, 1000)
	if err != nil {
		return nil, err
	}
	if len(in.RepositoryNames) > 0 && (in.NextToken != nil || in.MaxResults != nil) {
		return nil, awsapi.InvalidParameter("nextToken and maxResults cannot be used with repositoryNames")
	}
	out := &ecrtypes.DescribeRepositoriesResponse{Repositories: []*ecrtypes.Repository{}}
	err = s.Store.View(ctx, func(tx state.Tx) error {
		if len(in.RepositoryNames) > 0 {
			for _, n := range in.RepositoryNames {
				_, repo, err := s.getRepo(tx, nil, &n)
				if err != nil {
					return err
				}
				out.Repositories = append(out.Repositories, s.repoShape(repo))
			}
			return nil
		}
		scope := registry.Scope(s.account(), s.Registry.Region)
		after := ""
		if in.NextToken != nil {
			after = scope + *in.NextToken
		}
		return tx.Scan(registry.KindRepository, scope, after, limit+1, func(k string, data []byte) error {
			if len(out.Repositories) == limit {
				out.NextToken = ptr(deref(out.Repositories[limit-1].RepositoryName))
				return state.ErrStop
			}
			var r registry.Repository
			if err := json.Unmarshal(data, &r); err != nil {
				return err
			}
			out.Repositories = append(out.Repositories, s.repoShape(&r))
			return nil
		})
	})
	return out, err
}

func maxResults(m *int32, max int) (int, error) {
	if m == nil {
		return max, nil
	}
	if *m < 1 || int(*m) > max {
		return 0, awsapi.InvalidParameter("Invalid parameter at 'maxResults' failed to satisfy constraint: 'Member must have value between 1 and %d'", max)
	}
	return int(*m), nil
}

func (s *Service) DeleteRepository(ctx context.Context, in *ecrtypes.DeleteRepositoryRequest) (*ecrtypes.DeleteRepositoryResponse, error) {
	var repo *registry.Repository
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		key, r, err := s.getRepo(tx, in.RegistryId, in.RepositoryName)
		if err != nil {
			return err
		}
		repo = r
		if in.Force == nil || !*in.Force {
			n := 0
			if err := tx.Scan(registry.KindImage, registry.ImagePrefix(key), "", 1, func(string, []byte) error { n++; return nil }); err != nil {
				return err
			}
			if n > 0 {
				return awsapi.Errorf("RepositoryNotEmptyException", "The repository with name '%s' in registry with id '%s' cannot be deleted because it still contains images", r.Name, s.account())
			}
		}
		return registry.DeleteRepository(tx, key)
	})
	if err != nil {
		return nil, err
	}
	s.Registry.CollectSoon()
	return &ecrtypes.DeleteRepositoryResponse{Repository: s.repoShape(repo)}, nil
}

func (s *Service) PutImageTagMutability(ctx context.Context, in *ecrtypes.PutImageTagMutabilityRequest) (*ecrtypes.PutImageTagMutabilityResponse, error) {
	if in.ImageTagMutability == nil {
		return nil, awsapi.InvalidParameter("Invalid parameter at 'imageTagMutability' failed to satisfy constraint: 'Member must not be null'")
	}
	mut, err := mutability(in.ImageTagMutability)
	if err != nil {
		return nil, err
	}
	var name string
	err = s.Store.Update(ctx, func(tx state.Tx) error {
		key, r, err := s.getRepo(tx, in.RegistryId, in.RepositoryName)
		if err != nil {
			return err
		}
		r.TagMutability, name = mut, r.Name
		return tx.Put(registry.KindRepository, key, r)
	})
	if err != nil {
		return nil, err
	}
	return &ecrtypes.PutImageTagMutabilityResponse{ImageTagMutability: ptr(mut), RegistryId: ptr(s.account()), RepositoryName: ptr(name)}, nil
}

func (s *Service) GetAuthorizationToken(ctx context.Context, in *ecrtypes.GetAuthorizationTokenRequest) (*ecrtypes.GetAuthorizationTokenResponse, error) {
	exp := time.Now().Add(registry.TokenTTL).Truncate(time.Second)
	tok := base64.StdEncoding.EncodeToString([]byte("AWS:" + s.Registry.Tokens.Issue(exp)))
	return &ecrtypes.GetAuthorizationTokenResponse{AuthorizationData: []*ecrtypes.AuthorizationData{{
		AuthorizationToken: ptr(tok),
		ExpiresAt:          ecstypes.At(exp),
		ProxyEndpoint:      ptr("http://" + s.Host),
	}}}, nil
}

// images lists a repository's images in digest order.
func images(tx state.Tx, key string) ([]*registry.Image, error) {
	imgs, err := state.List[*registry.Image](tx, registry.KindImage, registry.ImagePrefix(key))
	return imgs, err
}

func tagStatus(f *string) (string, error) {
	switch v := deref(f); v {
	case "", "ANY":
		return "ANY", nil
	case "TAGGED", "UNTAGGED":
		return v, nil
	default:
		return "", awsapi.InvalidParameter("Invalid parameter at 'filter.tagStatus' failed to satisfy constraint: 'Member must satisfy enum value set: [TAGGED, UNTAGGED, ANY]'")
	}
}

func keep(img *registry.Image, status string) bool {
	return status == "ANY" || (status == "TAGGED") == (len(img.Tags) > 0)
}

// page cuts a list ordered by key at the token (the last key returned).
func page[T any](all []T, keyOf func(T) string, token *string, limit int) ([]T, *string) {
	if token != nil {
		i := sort.Search(len(all), func(i int) bool { return keyOf(all[i]) > *token })
		all = all[i:]
	}
	if len(all) > limit {
		return all[:limit], ptr(keyOf(all[limit-1]))
	}
	return all, nil
}

func (s *Service) ListImages(ctx context.Context, in *ecrtypes.ListImagesRequest) (*ecrtypes.ListImagesResponse, error) {
	limit, err := maxResults(in.MaxResults, 1000)
	if err != nil {
		return nil, err
	}
	var status string
	if in.Filter != nil {
		if status, err = tagStatus(in.Filter.TagStatus); err != nil {
			return nil, err
		}
	} else {
		status = "ANY"
	}
	var ids []*ecrtypes.ImageIdentifier
	err = s.Store.View(ctx, func(tx state.Tx) error {
		key, _, err := s.getRepo(tx, in.RegistryId, in.RepositoryName)
		if err != nil {
			return err
		}
		imgs, err := images(tx, key)
		for _, img := range imgs {
			if !keep(img, status) {
				continue
			}
			if len(img.Tags) == 0 {
				ids = append(ids, &ecrtypes.ImageIdentifier{ImageDigest: ptr(img.Digest)})
			}
			for _, t := range img.Tags {
				ids = append(ids, &ecrtypes.ImageIdentifier{ImageDigest: ptr(img.Digest), ImageTag: ptr(t)})
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	out := &ecrtypes.ListImagesResponse{}
	out.ImageIds, out.NextToken = page(ids, func(id *ecrtypes.ImageIdentifier) string {
		return deref(id.ImageDigest) + " " + deref(id.ImageTag)
	}, in.NextToken, limit)
	if out.ImageIds == nil {
		out.ImageIds = []*ecrtypes.ImageIdentifier{}
	}
	return out, nil
}

// find resolves the images ids name, with ECR's failure codes for the ones
// it cannot.
func find(tx state.Tx, key string, ids []*ecrtypes.ImageIdentifier) ([]*registry.Image, []*ecrtypes.ImageIdentifier, []*ecrtypes.ImageFailure, error) {
	var found []*registry.Image
	var foundIDs []*ecrtypes.ImageIdentifier
	var failures []*ecrtypes.ImageFailure
	fail := func(id *ecrtypes.ImageIdentifier, code, reason string) {
		failures = append(failures, &ecrtypes.ImageFailure{ImageId: id, FailureCode: ptr(code), FailureReason: ptr(reason)})
	}
	for _, id := range ids {
		digest, tag := deref(id.ImageDigest), deref(id.ImageTag)
		switch {
		case digest == "" && tag == "":
			fail(id, "MissingDigestAndTag", "Invalid request parameters: both tag and digest cannot be null")
			continue
		case digest != "" && !strings.HasPrefix(digest, "sha256:"):
			fail(id, "InvalidImageDigest", "Invalid request parameters: image digest should satisfy the regex '[a-zA-Z0-9-_+.]+:[a-fA-F0-9]+'")
			continue
		}
		if tag != "" {
			d, err := registry.ResolveTag(tx, key, tag)
			if err != nil {
				return nil, nil, nil, err
			}
			if d == "" {
				fail(id, "ImageNotFound", "Requested image not found")
				continue
			}
			if digest != "" && d != digest {
				fail(id, "ImageTagDoesNotMatchDigest", "Invalid request parameters: given tag does not map to the given digest")
				continue
			}
			digest = d
		}
		img, err := registry.GetImage(tx, key, digest)
		if err != nil {
			return nil, nil, nil, err
		}
		if img == nil {
			fail(id, "ImageNotFound", "Requested image not found")
			continue
		}
		found = append(found, img)
		foundIDs = append(foundIDs, &ecrtypes.ImageIdentifier{ImageDigest: ptr(digest), ImageTag: id.ImageTag})
	}
	return found, foundIDs, failures, nil
}

func (s *Service) DescribeImages(ctx context.Context, in *ecrtypes.DescribeImagesRequest) (*ecrtypes.DescribeImagesResponse, error) {
	limit, err := maxResults(in.MaxResults, 1000)
	if err != nil {
		return nil, err
	}
	if len(in.ImageIds) > 0 && (in.NextToken != nil || in.MaxResults != nil) {
		return nil, awsapi.InvalidParameter("nextToken and maxResults cannot be used with imageIds")
	}
	status := "ANY"
	if in.Filter != nil {
		if status, err = tagStatus(in.Filter.TagStatus); err != nil {
			return nil, err
		}
	}
	var name string
	var imgs []*registry.Image
	err = s.Store.View(ctx, func(tx state.Tx) error {
		key, repo, err := s.getRepo(tx, in.RegistryId, in.RepositoryName)
		if err != nil {
			return err
		}
		name = repo.Name
		if len(in.ImageIds) == 0 {
			imgs, err = images(tx, key)
			return err
		}
		var failures []*ecrtypes.ImageFailure
		imgs, _, failures, err = find(tx, key, in.ImageIds)
		if err == nil && len(failures) > 0 {
			return awsapi.Errorf("ImageNotFoundException", "The image with imageId {imageDigest:'%s', imageTag:'%s'} does not exist within the repository with name '%s' in the registry with id '%s'",
				deref(failures[0].ImageId.ImageDigest), deref(failures[0].ImageId.ImageTag), name, s.account())
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	imgs = slices.DeleteFunc(imgs, func(img *registry.Image) bool { return !keep(img, status) })
	out := &ecrtypes.DescribeImagesResponse{ImageDetails: []*ecrtypes.ImageDetail{}}
	if len(in.ImageIds) == 0 {
		imgs, out.NextToken = page(imgs, func(i *registry.Image) string { return i.Digest }, in.NextToken, limit)
	}
	for _, img := range imgs {
		d := &ecrtypes.ImageDetail{
			ImageDigest:            ptr(img.Digest),
			ImageManifestMediaType: ptr(img.MediaType),
			ImagePushedAt:          ecstypes.At(img.PushedAt),
			ImageSizeInBytes:       ptr(img.Size),
			ImageTags:              img.Tags,
			RegistryId:             ptr(s.account()),
			RepositoryName:         ptr(name),
			ImageStatus:            ptr("ACTIVE"),
		}
		if img.ArtifactMediaType != "" {
			d.ArtifactMediaType = ptr(img.ArtifactMediaType)
		}
		out.ImageDetails = append(out.ImageDetails, d)
	}
	return out, nil
}

func (s *Service) BatchGetImage(ctx context.Context, in *ecrtypes.BatchGetImageRequest) (*ecrtypes.BatchGetImageResponse, error) {
	if len(in.ImageIds) == 0 || len(in.ImageIds) > 100 {
		return nil, awsapi.InvalidParameter("Invalid parameter at 'imageIds' failed to satisfy constraint: 'Member must have length between 1 and 100'")
	}
	out := &ecrtypes.BatchGetImageResponse{Images: []*ecrtypes.Image{}, Failures: []*ecrtypes.ImageFailure{}}
	var imgs []*registry.Image
	var ids []*ecrtypes.ImageIdentifier
	var name string
	err := s.Store.View(ctx, func(tx state.Tx) error {
		key, repo, err := s.getRepo(tx, in.RegistryId, in.RepositoryName)
		if err != nil {
			return err
		}
		name = repo.Name
		imgs, ids, out.Failures, err = find(tx, key, in.ImageIds)
		return err
	})
	if err != nil {
		return nil, err
	}
	for i, img := range imgs {
		if len(in.AcceptedMediaTypes) > 0 && !slices.Contains(in.AcceptedMediaTypes, img.MediaType) {
			out.Failures = append(out.Failures, &ecrtypes.ImageFailure{ImageId: ids[i], FailureCode: ptr("UnsupportedImageType"),
				FailureReason: ptr("Image is of media type " + img.MediaType + ", not one of the accepted media types")})
			continue
		}
		b, err := os.ReadFile(s.Registry.BlobPath(img.Digest))
		if err != nil {
			return nil, err
		}
		out.Images = append(out.Images, &ecrtypes.Image{ImageId: ids[i], ImageManifest: ptr(string(b)),
			ImageManifestMediaType: ptr(img.MediaType), RegistryId: ptr(s.account()), RepositoryName: ptr(name)})
	}
	if out.Failures == nil {
		out.Failures = []*ecrtypes.ImageFailure{}
	}
	return out, nil
}

func (s *Service) BatchDeleteImage(ctx context.Context, in *ecrtypes.BatchDeleteImageRequest) (*ecrtypes.BatchDeleteImageResponse, error) {
	if len(in.ImageIds) == 0 || len(in.ImageIds) > 100 {
		return nil, awsapi.InvalidParameter("Invalid parameter at 'imageIds' failed to satisfy constraint: 'Member must have length between 1 and 100'")
	}
	var out *ecrtypes.BatchDeleteImageResponse
	err := s.Store.Update(ctx, func(tx state.Tx) error {
		out = &ecrtypes.BatchDeleteImageResponse{ImageIds: []*ecrtypes.ImageIdentifier{}, Failures: []*ecrtypes.ImageFailure{}}
		key, _, err := s.getRepo(tx, in.RegistryId, in.RepositoryName)
		if err != nil {
			return err
		}
		for _, id := range in.ImageIds {
			imgs, ids, failures, err := find(tx, key, []*ecrtypes.ImageIdentifier{id})
			if err != nil {
				return err
			}
			if len(failures) > 0 {
				out.Failures = append(out.Failures, failures...)
				continue
			}
			img := imgs[0]
			// A tag alone removes that tag; the image goes with its last
			// tag, as on ECR.
			if id.ImageDigest == nil {
				if err := registry.Untag(tx, key, img, *id.ImageTag); err != nil {
					return err
				}
			}
			if id.ImageDigest != nil || len(img.Tags) == 0 {
				if err := registry.DeleteImage(tx, key, img); err != nil {
					return err
				}
			}
			out.ImageIds = append(out.ImageIds, ids[0])
		}
		return nil
	})
	if err == nil && len(out.ImageIds) > 0 {
		s.Registry.CollectSoon()
	}
	return out, err
}
