// Command labctl does the few things the lab needs that an operator's tools
// do not.
//
//	labctl put-endpointslices --etcd URL FILE...
//	labctl htpasswd USER PASSWORD
//
// stores EndpointSlices (discovery.k8s.io/v1, YAML) the way kube-apiserver
// stores them (protobuf with the "k8s\x00" prefix under
// /registry/endpointslices/<ns>/<name>), straight into the cluster's etcd.
// It stands for the EndpointSlice controller that a cluster without
// kube-controller-manager lacks, and it is needed because the lab's pod
// addresses are loopback ones (127.0.0.0/8), which EndpointSlice validation
// in the API refuses ("may not be in the loopback range"). kube-apiserver
// reads the objects from etcd and serves and watches them like any other, so
// istiod sees them through its ordinary informers. An existing object keeps
// its uid and creationTimestamp; a changed one gets a new resourceVersion from
// etcd, as an update through the API would.
package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"time"

	"github.com/google/uuid"
	"golang.org/x/crypto/bcrypt"
	clientv3 "go.etcd.io/etcd/client/v3"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "put-endpointslices":
		putEndpointSlices(os.Args[2:])
	case "htpasswd":
		htpasswd(os.Args[2:])
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: labctl put-endpointslices --etcd URL FILE... | htpasswd USER PASSWORD")
	os.Exit(2)
}

func putEndpointSlices(args []string) {
	if len(args) < 3 || args[0] != "--etcd" {
		usage()
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{args[1]}, DialTimeout: 5 * time.Second})
	must(err)
	defer cli.Close()
	pb := protobuf.NewSerializer(scheme.Scheme, scheme.Scheme)
	for _, file := range args[2:] {
		f, err := os.Open(file)
		must(err)
		dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
		for {
			var s discoveryv1.EndpointSlice
			if err := dec.Decode(&s); err != nil {
				if err.Error() == "EOF" {
					break
				}
				must(fmt.Errorf("%s: %w", file, err))
			}
			if s.Name == "" {
				continue
			}
			if s.Namespace == "" {
				s.Namespace = "default"
			}
			must(put(cli, pb, &s))
		}
		f.Close()
	}
}

func put(cli *clientv3.Client, pb runtime.Serializer, s *discoveryv1.EndpointSlice) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	key := fmt.Sprintf("/registry/endpointslices/%s/%s", s.Namespace, s.Name)
	s.TypeMeta = metav1.TypeMeta{APIVersion: "discovery.k8s.io/v1", Kind: "EndpointSlice"}
	s.ResourceVersion = ""
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return err
	}
	if len(resp.Kvs) == 1 {
		obj, _, err := pb.Decode(resp.Kvs[0].Value, nil, &discoveryv1.EndpointSlice{})
		if err != nil {
			return fmt.Errorf("%s: stored object: %w", key, err)
		}
		old := obj.(*discoveryv1.EndpointSlice)
		s.UID, s.CreationTimestamp, s.Generation = old.UID, old.CreationTimestamp, old.Generation+1
	} else {
		s.UID = types.UID(uuid.NewString())
		s.CreationTimestamp = metav1.NewTime(time.Now().Truncate(time.Second))
		s.Generation = 1
	}
	var buf bytes.Buffer
	if err := pb.Encode(s, &buf); err != nil {
		return err
	}
	if _, err := cli.Put(ctx, key, buf.String()); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "labctl: stored EndpointSlice %s/%s (%d endpoints)\n", s.Namespace, s.Name, len(s.Endpoints))
	return nil
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "labctl:", err)
		os.Exit(1)
	}
}

// htpasswd prints USER:bcrypt(PASSWORD), the only hash the CNCF registry's
// htpasswd authentication accepts (Apache's `htpasswd -B`).
func htpasswd(args []string) {
	if len(args) != 2 {
		usage()
	}
	h, err := bcrypt.GenerateFromPassword([]byte(args[1]), bcrypt.DefaultCost)
	must(err)
	fmt.Printf("%s:%s\n", args[0], h)
}
