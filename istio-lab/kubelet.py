#!/usr/bin/env python3
"""The kubelet's part for one lab pod, between reading the Pod (as istiod's
webhook injected it) and starting its containers: what sidecar.sh then runs
comes from the stored pod spec, not from the lab.

    kubelet.py KUBECTL KUBECONFIG NAMESPACE POD DIR

Reads the Pod and writes into DIR, the pod's root as its containers see it
(sidecar.sh runs them with DIR as working directory, and Istio's agent finds
its files by relative paths: ./etc/istio/pod, ./var/run/secrets/tokens ...):

  every volume istio-proxy mounts, at DIR/<mountPath>: emptyDir, downwardAPI
    (labels, annotations in the kubelet's key="value" format), configMap,
    secret, and projected service-account tokens (a TokenRequest bound to
    the pod, for the audience and lifetime the volume asks; `kubectl create
    token`); a ConfigMap the pod needs and that is not there yet is waited
    for, as a pod stays ContainerCreating
  etc/hosts        what the kubelet writes (localhost, the pod's IP and name)
  init.args        istio-init's args (NUL-separated; absent without istio-init)
  proxy.args       istio-proxy's args, $(VAR) references expanded
  proxy.env        istio-proxy's environment, NAME=value NUL-separated, with
                   fieldRef and resourceFieldRef values resolved
  proxy.user       the uid and gid it runs as (securityContext)
  app.json         the other containers, {name, args} each

A field or volume kind the lab cannot provide is an error that names it:
nothing the injector asks for is dropped silently.
"""
import base64
import json
import math
import os
import re
import subprocess
import sys
import time

KC = CONF = None


def kubectl(*args, check=True):
    out = subprocess.run([KC, "--kubeconfig", CONF, *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        sys.exit(f"kubelet.py: kubectl {' '.join(args)}: {out.stderr.strip()}")
    return out


def go_quote(s):
    # strconv.Quote for the printable text labels and annotations hold
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def format_map(m):
    # k8s.io/kubernetes pkg/fieldpath FormatMap: sorted, key="value" lines
    return "".join(f"{k}={go_quote(m[k])}\n" for k in sorted(m))


def field(pod, path):
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status", {})
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return meta.get(m.group(1), {}).get(m.group(2), "")
    simple = {
        "metadata.name": meta["name"], "metadata.namespace": meta["namespace"], "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""), "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": status.get("podIP", ""), "status.hostIP": status.get("hostIP", ""),
        "status.podIPs": ",".join(p["ip"] for p in status.get("podIPs", [])),
        "status.hostIPs": ",".join(p["ip"] for p in status.get("hostIPs", [])),
    }
    if path in ("metadata.labels", "metadata.annotations"):
        return format_map(meta.get(path.split(".")[1], {}))
    if path not in simple:
        sys.exit(f"kubelet.py: fieldRef {path}: not provided by the lab")
    if path.startswith("status.") and not simple[path]:
        sys.exit(f"kubelet.py: {meta['name']}: {path} is empty (up.sh sets the pod's status before starting it)")
    return simple[path]


SUFFIX = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


def quantity(q):
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(q))
    if not m or m.group(2) not in SUFFIX:
        sys.exit(f"kubelet.py: resource quantity {q!r} not understood")
    return float(m.group(1)) * SUFFIX[m.group(2)]


def node_allocatable(resource):
    if resource == "cpu":
        return os.cpu_count() or 1
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) * 1024


def resource_field(container, ref):
    # pkg/api/v1/resource ExtractContainerResourceValue: the value divided by
    # the divisor, rounded up; a limit not set is the node's allocatable
    kind, res = ref["resource"].split(".", 1)
    if kind not in ("limits", "requests") or res not in ("cpu", "memory", "ephemeral-storage"):
        sys.exit(f"kubelet.py: resourceFieldRef {ref['resource']}: not provided by the lab")
    given = container.get("resources", {}).get(kind, {}).get(res)
    value = quantity(given) if given is not None else node_allocatable(res)
    return str(math.ceil(value / quantity(ref.get("divisor", "1")) - 1e-9))


def expand(s, env):
    # the kubelet's $(VAR) expansion (third_party/forked/golang/expansion):
    # known names are replaced, $$ is a literal $, anything else stays
    def sub(m):
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, s)


def container_env(pod, c):
    env = {}
    order = []
    for e in c.get("env", []):
        if "valueFrom" in e:
            src = e["valueFrom"]
            if "fieldRef" in src:
                v = field(pod, src["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in src:
                v = resource_field(c, src["resourceFieldRef"])
            else:
                sys.exit(f"kubelet.py: env {e['name']}: valueFrom {list(src)} not provided by the lab")
        else:
            v = expand(e.get("value", ""), env)
        if e["name"] not in env:
            order.append(e["name"])
        env[e["name"]] = v
    if c.get("envFrom"):
        sys.exit(f"kubelet.py: container {c['name']}: envFrom is not provided by the lab")
    return [(k, env[k]) for k in order], env


def wait_object(kind, ns, name, optional):
    for _ in range(300):
        out = kubectl("-n", ns, "get", kind, name, "-o", "json", check=False)
        if out.returncode == 0:
            return json.loads(out.stdout)
        if optional:
            return None
        time.sleep(0.1)
    sys.exit(f"kubelet.py: {kind} {ns}/{name} the pod mounts is not there after 30s")


def write(path, data, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    os.chmod(path, mode)


def keys_of(obj, items, binary=False):
    decode = base64.b64decode if binary else str.encode  # a Secret's data is base64
    data = {k: decode(v) for k, v in obj.get("data", {}).items()}
    data.update({k: base64.b64decode(v) for k, v in obj.get("binaryData", {}).items()})
    if items:
        return [(i["path"], data[i["key"]]) for i in items if i["key"] in data]
    return list(data.items())


def project(pod, ns, source, into):
    if "serviceAccountToken" in source:
        t = source["serviceAccountToken"]
        # no audience: the apiserver's own (the kube-api-access volume)
        audience = ["--audience", t["audience"]] if t.get("audience") else []
        token = kubectl("-n", ns, "create", "token", pod["spec"].get("serviceAccountName", "default"), *audience,
                        "--duration", f"{t.get('expirationSeconds', 3600)}s",
                        "--bound-object-kind", "Pod", "--bound-object-name", pod["metadata"]["name"],
                        "--bound-object-uid", pod["metadata"]["uid"]).stdout
        write(os.path.join(into, t["path"]), token, 0o644)
    elif "configMap" in source or "secret" in source:
        kind = "configMap" if "configMap" in source else "secret"
        s = source[kind]
        obj = wait_object(kind.lower(), ns, s["name"], s.get("optional", False))
        for path, data in keys_of(obj or {}, s.get("items"), binary=kind == "secret"):
            write(os.path.join(into, path), data)
    elif "downwardAPI" in source:
        for item in source["downwardAPI"].get("items", []):
            if "fieldRef" not in item:
                sys.exit(f"kubelet.py: downwardAPI item {item}: not provided by the lab")
            write(os.path.join(into, item["path"]), field(pod, item["fieldRef"]["fieldPath"]))
    else:
        sys.exit(f"kubelet.py: projected source {list(source)}: not provided by the lab")


def mount(pod, ns, volume, into):
    os.makedirs(into, exist_ok=True)
    if "emptyDir" in volume:
        os.chmod(into, 0o777)
    elif "projected" in volume:
        for source in volume["projected"].get("sources", []):
            project(pod, ns, source, into)
    elif "downwardAPI" in volume or "configMap" in volume:
        project(pod, ns, volume, into)
    elif "secret" in volume:
        s = volume["secret"]
        project(pod, ns, {"secret": {"name": s["secretName"], "items": s.get("items"),
                                     "optional": s.get("optional", False)}}, into)
    else:
        kind = [k for k in volume if k != "name"]
        sys.exit(f"kubelet.py: volume {volume['name']} ({kind}): not provided by the lab")


def main():
    global KC, CONF
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    KC, CONF, ns, name, root = sys.argv[1:]
    pod = json.loads(kubectl("-n", ns, "get", "pod", name, "-o", "json").stdout)
    spec = pod["spec"]
    inits = spec.get("initContainers", [])
    # native sidecars: istio-proxy as an init container that keeps running
    proxy = [c for c in inits if c["name"] == "istio-proxy" and c.get("restartPolicy") == "Always"]
    proxy += [c for c in spec["containers"] if c["name"] == "istio-proxy"]
    if not proxy:
        sys.exit(f"kubelet.py: {ns}/{name} has no istio-proxy container: the webhook did not inject it "
                 f"(annotations: {pod['metadata'].get('annotations', {})})")
    proxy = proxy[0]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for vm in proxy.get("volumeMounts", []):
        if vm.get("subPath") or vm.get("subPathExpr"):
            sys.exit(f"kubelet.py: volumeMount {vm['name']} with subPath: not provided by the lab")
        mount(pod, ns, volumes[vm["name"]], os.path.join(root, vm["mountPath"].lstrip("/")))
    write(os.path.join(root, "etc/hosts"),
          f"127.0.0.1\tlocalhost\n{pod['status'].get('podIP', '')}\t{name}\n")
    pairs, env = container_env(pod, proxy)
    write(os.path.join(root, "proxy.env"), "".join(f"{k}={v}\0" for k, v in pairs))
    write(os.path.join(root, "proxy.args"),
          "".join(expand(a, env) + "\0" for a in proxy.get("command", []) + proxy.get("args", [])))
    ctx = {**spec.get("securityContext", {}), **proxy.get("securityContext", {})}
    write(os.path.join(root, "proxy.user"), f"{ctx.get('runAsUser', 0)}:{ctx.get('runAsGroup', ctx.get('runAsUser', 0))}\n")
    for c in inits:
        if c["name"] == "istio-init":
            _, ienv = container_env(pod, c)
            write(os.path.join(root, "init.args"), "".join(expand(a, ienv) + "\0" for a in c.get("args", [])))
        elif c is not proxy:
            sys.exit(f"kubelet.py: init container {c['name']}: not provided by the lab")
    apps = [{"name": c["name"], "args": c.get("args", [])} for c in spec["containers"] if c is not proxy]
    write(os.path.join(root, "app.json"), json.dumps(apps))


if __name__ == "__main__":
    main()
