// Command webimage writes the README walkthrough's "nginx:latest" image: a
// tiny busybox httpd on port 80, so the walkthrough works with no registry.
//
//	go run ./docs/examples/webimage -o web.tar
//	gantry image load web.tar
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/gantry-dev/gantry/internal/testimage"
)

func main() {
	out := flag.String("o", "web.tar", "where to write the docker-save tarball")
	name := flag.String("name", "nginx:latest", "the image's name")
	oci := flag.Bool("oci", false, "write an OCI image layout tarball instead of docker-save")
	flag.Parse()
	write := testimage.Write
	if *oci {
		write = testimage.WriteOCI
	}
	if err := write(*out, *name, testimage.WebOptions()...); err != nil {
		fmt.Fprintln(os.Stderr, "webimage:", err)
		os.Exit(1)
	}
	fmt.Printf("wrote %s (%s); load it with: gantry image load %s\n", *out, *name, *out)
}
