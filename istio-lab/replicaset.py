#!/usr/bin/env python3
"""The lab's stand-in for kube-controller-manager's Deployment and ReplicaSet
controllers, for one Deployment: makes its ReplicaSet (named with a
pod-template-hash, as the Deployment controller names it) and creates the
pods given, from the Deployment's pod template, owned by that ReplicaSet.

    replicaset.py KUBECTL KUBECONFIG NAMESPACE DEPLOYMENT NODE POD...

The pods are created through the API like any pod, so the apiserver calls
istiod's sidecar-injector webhook on each (the namespace's istio.io/rev
label, or the template's sidecar.istio.io/inject), and stores them as Istio
injected them. Pods get the names given (the lab's addresses and tests name
them) and the generateName, labels and owner a ReplicaSet gives, from which
the injector derives the workload (ISTIO_META_WORKLOAD_NAME, _OWNER: Istio's
pkg/kube GetDeployMetaFromPod). No scheduler: spec.nodeName is NODE.
"""
import copy
import hashlib
import json
import subprocess
import sys


def kubectl(kc, conf, *args, stdin=None):
    out = subprocess.run([kc, "--kubeconfig", conf, *args], input=stdin, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"replicaset.py: kubectl {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def template_hash(template):
    # The Deployment controller hashes the template (fnv32a) and encodes it
    # with the alphabet of k8s.io/apimachinery's rand.SafeEncodeString; a
    # hash of the template's JSON in that alphabet serves the same purpose.
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(alphabet[b % len(alphabet)] for b in digest[:10])


def main():
    if len(sys.argv) < 7:
        sys.exit(__doc__)
    kc, conf, ns, name, node, *pods = sys.argv[1:]
    dep = json.loads(kubectl(kc, conf, "-n", ns, "get", "deployment", name, "-o", "json"))
    template = dep["spec"]["template"]
    h = template_hash(template)
    rs_name = f"{name}-{h}"
    labels = {**template["metadata"].get("labels", {}), "pod-template-hash": h}
    rs = {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": rs_name, "namespace": ns, "labels": labels,
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                                          "uid": dep["metadata"]["uid"], "controller": True,
                                          "blockOwnerDeletion": True}]},
        "spec": {"replicas": len(pods),
                 "selector": {"matchLabels": {**dep["spec"]["selector"].get("matchLabels", {}), "pod-template-hash": h}},
                 "template": {**template, "metadata": {**template["metadata"], "labels": labels}}},
    }
    kubectl(kc, conf, "apply", "-f", "-", stdin=json.dumps(rs))
    rs_uid = kubectl(kc, conf, "-n", ns, "get", "replicaset", rs_name, "-o", "jsonpath={.metadata.uid}")
    for pod_name in pods:
        meta = copy.deepcopy(template["metadata"])
        meta.update({"name": pod_name, "namespace": ns, "generateName": f"{rs_name}-", "labels": labels,
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name,
                                          "uid": rs_uid, "controller": True, "blockOwnerDeletion": True}]})
        spec = {**copy.deepcopy(template["spec"]), "nodeName": node}
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
        kubectl(kc, conf, "create", "-f", "-", stdin=json.dumps(pod))
        print(f"{ns}/{pod_name}")


if __name__ == "__main__":
    main()
