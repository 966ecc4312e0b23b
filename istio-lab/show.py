#!/usr/bin/env python3
"""Summarise a sidecar's Envoy config_dump (with EDS) as istiod pushed it.

    show.py CONFIG_DUMP.json

Prints listeners, the echo-svc clusters and their endpoints (address, locality,
weight, health, istio.workload metadata), the echo-svc routes, and the ECDS
Wasm filters. Exits 1 unless both clusters' echo-svc endpoints are present:
the local pods by their own address, the other network's as its east-west
gateway :15443 with istio.workload ";;;;<cluster>".
"""
import json
import sys

dump = json.load(open(sys.argv[1]))
by_type = {}
for c in dump["configs"]:
    by_type.setdefault(c["@type"].split(".")[-1], []).append(c)


def listeners():
    out = []
    for c in by_type.get("ListenersConfigDump", []):
        for l in c.get("dynamic_listeners", []):
            a = l.get("active_state", {}).get("listener")
            if a:
                sa = a.get("address", {}).get("socket_address", {})
                out.append((a["name"], f'{sa.get("address")}:{sa.get("port_value")}', a.get("bind_to_port", True)))
    return out


print("listeners (%d):" % len(listeners()))
for name, addr, bind in listeners():
    print(f"  {name:45s} {addr:22s} bind_to_port={bind}")

clusters = []
for c in by_type.get("ClustersConfigDump", []):
    for dc in c.get("dynamic_active_clusters", []):
        clusters.append(dc["cluster"]["name"])
print("clusters (%d), echo-svc ones:" % len(clusters))
for n in sorted(clusters):
    if "echo-svc" in n:
        print("  " + n)

ok_local = ok_remote = False
for c in by_type.get("EndpointsConfigDump", []):
    for e in c.get("dynamic_endpoint_configs", []):
        cla = e["endpoint_config"]
        name = cla["cluster_name"]
        if "echo-svc" not in name:
            continue
        print(f"endpoints of {name}:")
        for le in cla.get("endpoints", []):
            loc = le.get("locality", {})
            for lb in le.get("lb_endpoints", []):
                sa = lb["endpoint"]["address"]["socket_address"]
                md = lb.get("metadata", {}).get("filter_metadata", {})
                wl = md.get("istio", {}).get("workload", "")
                tls = md.get("envoy.transport_socket_match", {}).get("tlsMode", "")
                print(f'  {sa["address"]}:{sa["port_value"]:<6} locality={loc or "{}"} weight={lb.get("load_balancing_weight", le.get("load_balancing_weight"))} '
                      f'health={lb.get("health_status", "?")} istio.workload="{wl}" tlsMode={tls}')
                if name == "outbound|80||echo-svc.default.svc.cluster.local":
                    if sa["port_value"] == 8080 and wl.endswith(";gke"):
                        ok_local = True
                    if sa["port_value"] == 15443 and wl == ";;;;anthos":
                        ok_remote = True

for c in by_type.get("RoutesConfigDump", []):
    for r in c.get("dynamic_route_configs", []):
        rc = r["route_config"]
        for vh in rc.get("virtual_hosts", []):
            if not any("echo-svc" in d for d in vh.get("domains", [])):
                continue
            print(f'route {rc["name"]} virtual host {vh["name"]}:')
            for rt in vh.get("routes", []):
                hdrs = [f'{h["name"]}={h.get("string_match", {}).get("exact", h)}' for h in rt.get("match", {}).get("headers", [])]
                print(f'  {rt.get("name", ""):10s} headers={hdrs} -> {rt.get("route", {}).get("cluster")}')

for c in by_type.get("EcdsConfigDump", []):
    for e in c.get("ecds_filters", []):
        f = e["ecds_filter"]
        cfg = f.get("typed_config", {}).get("value", {}).get("config", {}) or f.get("typed_config", {}).get("config", {})
        vm = cfg.get("vm_config", {})
        code = vm.get("code", {})
        print(f'ecds {f["name"]}: runtime={vm.get("runtime")} code={json.dumps(code)[:160]} fail_open={cfg.get("fail_open")} failure_policy={cfg.get("failure_policy")}')
        conf = cfg.get("configuration", {}).get("value")
        if conf:
            print(f"  pluginConfig: {conf[:200]}")

print(f"\nlocal gke endpoints by pod address: {ok_local}; anthos only through its gateway with ;;;;anthos: {ok_remote}")
sys.exit(0 if ok_local and ok_remote else 1)
