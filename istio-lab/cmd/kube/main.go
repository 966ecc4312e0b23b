// Command kube is one Kubernetes cluster's control-plane storage and API:
// an embedded etcd and kube-apiserver (both built from their Go modules) in
// one process, listening on loopback only. There is no kubelet, scheduler or
// controller-manager: pods are API objects whose IPs and readiness the lab
// sets, as envtest does.
//
//	kube --dir DIR --etcd-port P --apiserver-port A [--service-cidr CIDR] [-- extra kube-apiserver flags]
//
// DIR gets etcd's data, the apiserver's self-signed serving certificate, the
// service-account keys and a static token file (token "lab-admin-token",
// user "lab-admin" in group system:masters). A kubeconfig for it is written
// to DIR/kubeconfig once the apiserver answers /readyz.
package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

const Token = "lab-admin-token"

func main() {
	dir := flag.String("dir", "", "state directory")
	etcdPort := flag.Int("etcd-port", 0, "etcd client port on 127.0.0.1 (peer port is this + 1)")
	apiPort := flag.Int("apiserver-port", 0, "kube-apiserver secure port on 127.0.0.1")
	serviceCIDR := flag.String("service-cidr", "10.96.0.0/16", "service cluster IP range")
	flag.Parse()
	if *dir == "" || *etcdPort == 0 || *apiPort == 0 {
		fmt.Fprintln(os.Stderr, "kube: --dir, --etcd-port and --apiserver-port are required")
		os.Exit(2)
	}
	must(os.MkdirAll(*dir, 0o755))
	saKey := filepath.Join(*dir, "sa.key")
	saPub := filepath.Join(*dir, "sa.pub")
	must(ensureServiceAccountKey(saKey, saPub))
	tokens := filepath.Join(*dir, "tokens.csv")
	must(os.WriteFile(tokens, []byte(Token+`,lab-admin,lab-admin,"system:masters"`+"\n"), 0o600))

	// etcd, embedded, loopback only.
	cfg := embed.NewConfig()
	cfg.Name = "lab"
	cfg.Dir = filepath.Join(*dir, "etcd")
	cfg.LogLevel = "error"
	client := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", *etcdPort)}
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", *etcdPort+1)}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	must(err)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		fmt.Fprintln(os.Stderr, "kube: etcd did not become ready")
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "kube: etcd ready on %s\n", client.String())
	go func() {
		if err := <-e.Err(); err != nil {
			fmt.Fprintln(os.Stderr, "kube: etcd:", err)
			os.Exit(1)
		}
	}()

	server := fmt.Sprintf("https://127.0.0.1:%d", *apiPort)
	go writeKubeconfigWhenReady(*dir, server)

	args := []string{
		"--etcd-servers=" + client.String(),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", *apiPort),
		"--cert-dir=" + filepath.Join(*dir, "certs"),
		"--token-auth-file=" + tokens,
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + saPub,
		"--service-account-signing-key-file=" + saKey,
		"--service-cluster-ip-range=" + *serviceCIDR,
		// the "kubernetes" Endpoints would carry the loopback advertise address,
		// which Endpoints validation refuses.
		"--endpoint-reconciler-type=none",
		// Webhooks (istiod's sidecar injector and validator) are Services:
		// without kube-proxy the apiserver cannot reach a ClusterIP, so it
		// dials the Service's endpoint (from its EndpointSlices), as it does
		// for aggregated APIs with this flag (cmd/kube-apiserver/app/server.go,
		// buildServiceResolver).
		"--enable-aggregator-routing=true",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"-v=0",
	}
	args = append(args, flag.Args()...)
	cmd := app.NewAPIServerCommand()
	cmd.SetArgs(args)
	os.Exit(cli.Run(cmd))
}

func writeKubeconfigWhenReady(dir, server string) {
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the apiserver's own self-signed cert, checked below via CA data
	}}
	for {
		req, _ := http.NewRequest("GET", server+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+Token)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The self-signed serving certificate the apiserver made in cert-dir.
	ca, err := os.ReadFile(filepath.Join(dir, "certs", "apiserver.crt"))
	must(err)
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: lab-admin
  user:
    token: %s
contexts:
- name: lab
  context: {cluster: lab, user: lab-admin}
current-context: lab
`, server, b64(ca), Token)
	tmp := filepath.Join(dir, "kubeconfig.tmp")
	must(os.WriteFile(tmp, []byte(kc), 0o600))
	must(os.Rename(tmp, filepath.Join(dir, "kubeconfig")))
	fmt.Fprintf(os.Stderr, "kube: apiserver ready on %s, kubeconfig %s\n", server, filepath.Join(dir, "kubeconfig"))
}

func ensureServiceAccountKey(keyPath, pubPath string) error {
	if _, err := os.Stat(keyPath); err == nil {
		return nil
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), 0o600)
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "kube:", err)
		os.Exit(1)
	}
}
