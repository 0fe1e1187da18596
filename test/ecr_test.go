package test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry-dev/gantry/internal/testimage"
)

type ecrImageDetail struct {
	ImageDigest            string   `json:"imageDigest"`
	ImageTags              []string `json:"imageTags"`
	ImageSizeInBytes       int64    `json:"imageSizeInBytes"`
	ImagePushedAt          float64  `json:"imagePushedAt"`
	ImageManifestMediaType string   `json:"imageManifestMediaType"`
}

func (s *registryServer) describeImages(t *testing.T, repo string) []ecrImageDetail {
	t.Helper()
	var out struct{ ImageDetails []ecrImageDetail }
	s.MustAWS(&out, "ecr", "describe-images", "--repository-name", repo)
	return out.ImageDetails
}

// TestECRAPI drives the ECR API with the aws CLI over images pushed with skopeo.
func TestECRAPI(t *testing.T) {
	s := startRegistry(t)
	var created struct {
		Repository struct{ RepositoryUri, RepositoryArn, RegistryId, ImageTagMutability string }
	}
	s.MustAWS(&created, "ecr", "create-repository", "--repository-name", "web/app")
	acct := s.Creds.AccountID
	if r := created.Repository; r.RepositoryUri != s.Host+"/web/app" || r.RegistryId != acct || r.ImageTagMutability != "MUTABLE" ||
		r.RepositoryArn != "arn:aws:ecr:"+s.Creds.Region+":"+acct+":repository/web/app" {
		t.Fatalf("create-repository: %+v", r)
	}
	for _, c := range []struct {
		code string
		args []string
	}{
		{"RepositoryAlreadyExistsException", []string{"ecr", "create-repository", "--repository-name", "web/app"}},
		{"InvalidParameterException", []string{"ecr", "create-repository", "--repository-name", "Web/App"}},
		{"InvalidParameterException", []string{"ecr", "create-repository", "--repository-name", "x1", "--image-tag-mutability", "SOMETIMES"}},
		{"RepositoryNotFoundException", []string{"ecr", "describe-repositories", "--repository-names", "nosuch"}},
		{"RepositoryNotFoundException", []string{"ecr", "list-images", "--repository-name", "nosuch"}},
		{"LifecyclePolicyNotFoundException", []string{"ecr", "get-lifecycle-policy", "--repository-name", "web/app"}},
		{"InvalidParameterException", []string{"ecr", "put-lifecycle-policy", "--repository-name", "web/app", "--lifecycle-policy-text", `{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":0},"action":{"type":"expire"}}]}`}},
	} {
		if code, msg := s.AWSError(c.args...); code != c.code {
			t.Errorf("%v: got %s (%s), want %s", c.args, code, msg, c.code)
		}
	}

	var tok struct {
		AuthorizationData []struct {
			AuthorizationToken, ProxyEndpoint string
			ExpiresAt                         float64
		}
	}
	s.MustAWS(&tok, "ecr", "get-authorization-token")
	ad := tok.AuthorizationData[0]
	raw, _ := base64.StdEncoding.DecodeString(ad.AuthorizationToken)
	user, pw, _ := strings.Cut(string(raw), ":")
	if user != "AWS" || pw == "" || ad.ProxyEndpoint != "http://"+s.Host {
		t.Fatalf("authorization data: %+v", ad)
	}
	if d := time.Until(time.Unix(int64(ad.ExpiresAt), 0)); d < 11*time.Hour || d > 12*time.Hour {
		t.Fatalf("token expires in %v, want 12h", d)
	}

	busybox := testimage.Busybox(t)
	other := filepath.Join(t.TempDir(), "other.tar")
	if err := testimage.Write(other, "gantry-test/other:latest", testimage.WithCmd("true")); err != nil {
		t.Fatal(err)
	}
	s.push(t, busybox, "web/app:v1", pw)
	time.Sleep(1100 * time.Millisecond) // distinct pushedAt for the lifecycle check
	s.push(t, other, "web/app:v2", pw)

	imgs := s.describeImages(t, "web/app")
	if len(imgs) != 2 {
		t.Fatalf("describe-images: %+v", imgs)
	}
	byTag := map[string]ecrImageDetail{}
	for _, img := range imgs {
		if len(img.ImageTags) != 1 || img.ImageSizeInBytes <= 0 || img.ImagePushedAt < float64(time.Now().Add(-time.Hour).Unix()) || !strings.HasPrefix(img.ImageDigest, "sha256:") {
			t.Fatalf("image detail: %+v", img)
		}
		byTag[img.ImageTags[0]] = img
	}
	var got struct {
		Images []struct {
			ImageManifest string
			ImageId       struct{ ImageDigest, ImageTag string }
		}
		Failures []struct{ FailureCode string }
	}
	s.MustAWS(&got, "ecr", "batch-get-image", "--repository-name", "web/app", "--image-ids", "imageTag=v1", "imageTag=nosuch")
	sum := sha256.Sum256([]byte(got.Images[0].ImageManifest))
	if len(got.Images) != 1 || "sha256:"+hex.EncodeToString(sum[:]) != byTag["v1"].ImageDigest || len(got.Failures) != 1 || got.Failures[0].FailureCode != "ImageNotFound" {
		t.Fatalf("batch-get-image: %+v", got)
	}

	// IMMUTABLE: v1 cannot be moved to another image.
	s.MustAWS(nil, "ecr", "put-image-tag-mutability", "--repository-name", "web/app", "--image-tag-mutability", "IMMUTABLE")
	if out, ok := skopeo(t, "copy", "docker-archive:"+other, "docker://"+s.Host+"/web/app:v1", "--dest-creds", "AWS:"+pw, "--dest-tls-verify=false"); ok || !strings.Contains(out, "immutable") {
		t.Fatalf("overwriting an immutable tag: ok=%v %s", ok, out)
	}
	s.MustAWS(nil, "ecr", "put-image-tag-mutability", "--repository-name", "web/app", "--image-tag-mutability", "MUTABLE")

	// Lifecycle: keep one image; the older (v1) expires at once.
	s.MustAWS(nil, "ecr", "put-lifecycle-policy", "--repository-name", "web/app", "--lifecycle-policy-text",
		`{"rules":[{"rulePriority":1,"description":"keep one","selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"expire"}}]}`)
	imgs = s.describeImages(t, "web/app")
	if len(imgs) != 1 || imgs[0].ImageDigest != byTag["v2"].ImageDigest {
		t.Fatalf("after lifecycle policy: %+v, want only v2", imgs)
	}
	var pol struct{ LifecyclePolicyText string }
	s.MustAWS(&pol, "ecr", "get-lifecycle-policy", "--repository-name", "web/app")
	if !strings.Contains(pol.LifecyclePolicyText, "keep one") {
		t.Fatalf("get-lifecycle-policy: %+v", pol)
	}
	// A new push runs the policy again: v3 stays, v2 goes.
	s.push(t, busybox, "web/app:v3", pw)
	imgs = s.describeImages(t, "web/app")
	if len(imgs) != 1 || imgs[0].ImageTags[0] != "v3" {
		t.Fatalf("after push under the policy: %+v", imgs)
	}
	s.MustAWS(nil, "ecr", "delete-lifecycle-policy", "--repository-name", "web/app")
	s.push(t, other, "web/app:v2", pw)

	var del struct {
		ImageIds []struct{ ImageTag string }
		Failures []struct{ FailureCode string }
	}
	s.MustAWS(&del, "ecr", "batch-delete-image", "--repository-name", "web/app", "--image-ids", "imageTag=v2", "imageDigest=sha256:"+strings.Repeat("a", 64))
	if len(del.ImageIds) != 1 || len(del.Failures) != 1 || del.Failures[0].FailureCode != "ImageNotFound" {
		t.Fatalf("batch-delete-image: %+v", del)
	}
	var list struct{ ImageIds []struct{ ImageTag string } }
	s.MustAWS(&list, "ecr", "list-images", "--repository-name", "web/app")
	if len(list.ImageIds) != 1 || list.ImageIds[0].ImageTag != "v3" {
		t.Fatalf("list-images: %+v", list)
	}

	if code, _ := s.AWSError("ecr", "delete-repository", "--repository-name", "web/app"); code != "RepositoryNotEmptyException" {
		t.Fatalf("delete non-empty repository: %s", code)
	}
	s.MustAWS(nil, "ecr", "delete-repository", "--repository-name", "web/app", "--force")
	if out, ok := skopeo(t, "inspect", "--creds", "AWS:"+pw, "--tls-verify=false", "docker://"+s.Host+"/web/app:v3"); ok {
		t.Fatalf("pull from a deleted repository: %s", out)
	}
}

// TestECRTaskImage runs tasks whose images come from Gantry's registry, by
// repository URI and by the ECR-style name, pulled by containerd.
func TestECRTaskImage(t *testing.T) {
	s := startRegistry(t)
	s.createRepo(t, "jobs")
	s.push(t, testimage.Busybox(t), "jobs:v1", s.password(t))
	ecrName := fmt.Sprintf("%s.dkr.ecr.%s.amazonaws.com/jobs:v1", s.Creds.AccountID, s.Creds.Region)
	s.MustAWS(nil, "ecs", "create-cluster", "--cluster-name", "demo")
	for fam, image := range map[string]string{"byuri": s.Host + "/jobs:v1", "byecr": ecrName} {
		registerJSON(t, s.Server, fmt.Sprintf(`{"family":%q,"networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512",
			"executionRoleArn":"arn:aws:iam::%s:role/ecsTaskExecutionRole",
			"containerDefinitions":[{"name":"main","image":%q,"command":["sh","-c","exit 7"]}]}`, fam, s.Creds.AccountID, image))
	}
	net := awsvpc(defaultSubnet(t, s.Server))
	for _, fam := range []string{"byuri", "byecr"} {
		task := runTask(t, s.Server, "--cluster", "demo", "--task-definition", fam, "--network-configuration", net)
		got := waitStatus(t, s.Server, "demo", task.TaskArn, "STOPPED", 2*time.Minute)
		if c := got.Containers[0]; c.ExitCode == nil || *c.ExitCode != 7 {
			t.Fatalf("%s: task stopped with %s %q, container %+v", fam, got.StopCode, got.StoppedReason, c)
		}
	}
}
