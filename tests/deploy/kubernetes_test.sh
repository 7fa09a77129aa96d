#!/usr/bin/env bash
# deploy/kubernetes without a cluster:
#  1. every object validates against the Kubernetes API's OpenAPI schema
#     (kubernetes-models, pinned in package-lock.json, installed into the
#     build tree) with unknown fields refused, and broken ones are refused:
#     a misspelt field, a bad enum, Bidirectional propagation without
#     privileged;
#  2. the objects have what an operator needs (explicit capabilities, not
#     privileged; every taint tolerated; a PriorityClass of our own; no
#     service-account token; readiness on /readyz, liveness on /healthz; one
#     scrape path whose job label the alert rules use);
#  3. the container's command runs on this host with the DaemonSet's paths:
#     a private mount namespace puts the build's binary at /usr/bin/bpfmgr
#     and the ConfigMap (as kubelet lays it out, `..data` symlink and all)
#     at /etc/bpfmgr (read-only overlays add the two mount points; the host
#     sees none of it); /sys/fs/bpf, /sys/fs/cgroup, /sys/kernel/tracing and
#     /run/bpfmgr are the host's, as in the pod. Two things differ, both so
#     the test cannot disturb the host: the metrics address is a free
#     loopback port, and the manifest's pin_root a private one.
# Usage: kubernetes_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 build=$2
deploy=$src/deploy/kubernetes
work=$build/deploy-validation

# --- 1. schema
mkdir -p "$work"
if ! cmp -s "$src/tests/deploy/package-lock.json" "$work/package-lock.json" ||
   [[ ! -d $work/node_modules ]]; then
  cp "$src/tests/deploy/package.json" "$src/tests/deploy/package-lock.json" "$work/"
  (cd "$work" && npm ci --no-audit --no-fund --loglevel=error)
fi
export NODE_PATH=$work/node_modules
node "$src/tests/deploy/validate-kubernetes.js" "$deploy"/*.yaml \
  "$deploy"/overlays/*/kustomization.yaml
tmp=$(mktemp -d /tmp/bpfmgr-k8s-test-XXXXXX)
serve_pid=
cleanup() {
  [[ -n $serve_pid ]] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
  [[ -n ${pin_root:-} && -d ${pin_root:-} ]] && "$build/bin/bpfmgr" unpin --pin-root "$pin_root" --quiet
  rm -rf "$tmp"
}
trap cleanup EXIT
refused() {  # a sed expression that breaks the DaemonSet, and what it breaks
  sed "$1" "$deploy/daemonset.yaml" > "$tmp/broken.yaml"
  cmp -s "$deploy/daemonset.yaml" "$tmp/broken.yaml" && { echo "FAIL: '$1' changed nothing"; exit 1; }
  if node "$src/tests/deploy/validate-kubernetes.js" "$tmp/broken.yaml" > "$tmp/why" 2>&1; then
    echo "FAIL: a DaemonSet with $2 validated"; exit 1
  fi
  echo "refused ($2): $(grep -v '^[0-9]* object' "$tmp/why" | tail -1)"
}
refused 's/mountPropagation: HostToContainer/mountPropagation: Sideways/' 'an invalid mountPropagation'
refused 's/livenessProbe:/livenesProbe:/' 'a misspelt livenessProbe'
refused 's/^\(\s*\)readOnlyRootFilesystem: true/\1readOnlyRootFS: true/' 'an unknown securityContext field'
refused 's/mountPropagation: HostToContainer/mountPropagation: Bidirectional/' 'Bidirectional propagation unprivileged'
refused 's/periodSeconds: 30/periodSeconds: "often"/' 'a string for an integer' 

# --- 2. what the DaemonSet must have; prints the container command as JSON
node - "$deploy" > "$tmp/container.json" <<'EOF'
const fs = require('fs'), yaml = require('js-yaml');
const dir = process.argv[2];
const ds = yaml.load(fs.readFileSync(dir + '/daemonset.yaml', 'utf8'));
const cm = yaml.load(fs.readFileSync(dir + '/configmap.yaml', 'utf8'));
const pod = ds.spec.template.spec, c = pod.containers[0];
const fail = (m) => { console.error('FAIL: ' + m); process.exit(1); };
const mount = (p) => c.volumeMounts.find((m) => m.mountPath === p) || fail('no mount at ' + p);
const volume = (m) => pod.volumes.find((v) => v.name === m.name);
const sc = c.securityContext || {};
if (sc.privileged) fail('privileged: explicit capabilities instead');
const caps = (sc.capabilities || {});
if (JSON.stringify(caps.drop) !== '["ALL"]') fail('capabilities not dropped');
if (JSON.stringify([...caps.add].sort()) !== '["BPF","NET_ADMIN","PERFMON","SYS_ADMIN"]') fail('capabilities: ' + caps.add);
if (sc.allowPrivilegeEscalation !== false || sc.readOnlyRootFilesystem !== true) fail('escalation/rootfs');
if (!['HostToContainer', 'None', undefined].includes(mount('/sys/fs/bpf').mountPropagation)) fail('bpffs propagation');
for (const p of ['/sys/fs/bpf', '/sys/fs/cgroup', '/sys/kernel/tracing'])
  if (volume(mount(p)).hostPath.path !== p) fail(p + ' is not the host path');
if (volume(mount('/etc/bpfmgr')).configMap.name !== cm.metadata.name) fail('manifest not from the ConfigMap');
if (pod.hostNetwork || pod.hostPID) fail('hostNetwork/hostPID without a reason');
if (pod.automountServiceAccountToken !== false) fail('service-account token mounted');
if (!pod.nodeSelector) fail('no nodeSelector');
if (!(pod.tolerations || []).some((t) => t.operator === 'Exists' && !t.effect && !t.key)) fail('not every taint tolerated');
const pc = yaml.load(fs.readFileSync(dir + '/priorityclass.yaml', 'utf8'));
if (pod.priorityClassName !== pc.metadata.name) fail('priorityClassName is not the shipped class');
if (pod.priorityClassName.startsWith('system-')) fail('system- classes are kube-system only');
const kust = yaml.load(fs.readFileSync(dir + '/kustomization.yaml', 'utf8'));
if (!kust.resources.includes('priorityclass.yaml')) fail('PriorityClass not in the kustomization');
if (!c.resources.requests || !c.resources.limits) fail('no resource requests/limits');
if (c.livenessProbe.httpGet.path !== '/healthz') fail('liveness not on /healthz');
if (c.readinessProbe.httpGet.path !== '/readyz') fail('readiness not on /readyz');
// One scrape path: the ServiceMonitor, whose job label the alerts use.
const svc = yaml.load(fs.readFileSync(dir + '/service.yaml', 'utf8'));
const sm = yaml.load(fs.readFileSync(dir + '/servicemonitor.yaml', 'utf8'));
const ann = {...(ds.spec.template.metadata.annotations || {}), ...(svc.metadata.annotations || {})};
if (Object.keys(ann).some((k) => k.startsWith('prometheus.io/'))) fail('prometheus.io annotations: a second scrape path');
const job = svc.metadata.labels[sm.spec.jobLabel];
const alerts = fs.readFileSync(dir + '/../prometheus/alerts.yaml', 'utf8');
if (!job || !alerts.includes(`up{job="${job}"}`)) fail(`alerts do not use the ServiceMonitor's job "${job}"`);
const port = c.ports.find((p) => p.name === 'metrics').containerPort;
console.log(JSON.stringify({argv: [...c.command, ...c.args],
                            manifest: cm.data['manifest.toml'],
                            caps: caps.add, port}));
EOF

# --- 3. the entrypoint on this host
pin_root=/sys/fs/bpf/bpfmgr-k8s-test-$$
port=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
read_json() { node -e "const j=require('$tmp/container.json'); console.log($1)"; }
cm=$tmp/configmap
mkdir -p "$cm/..2026_01_01_00_00_00.1"
read_json 'j.manifest' | sed "s#^pin_root = .*#pin_root = \"$pin_root\"#" \
  > "$cm/..2026_01_01_00_00_00.1/manifest.toml"
ln -s ..2026_01_01_00_00_00.1 "$cm/..data"
ln -s ..data/manifest.toml "$cm/manifest.toml"
# $(POD_IP) as kubelet expands it, here the loopback address.
mapfile -t argv < <(read_json 'j.argv.join("\n")' |
                    sed "s#^\$(POD_IP):$(read_json j.port)\$#127.0.0.1:$port#")
bounding=-all
for c in $(read_json 'j.caps.join(" ")'); do bounding+=",+${c,,}"; done
echo "entrypoint: ${argv[*]}"
# The plugins where the image has them, found next to the binary as there.
unset BPFMGR_PLUGIN_PATH
mkdir -p "$tmp/points/usr/bin" "$tmp/points/etc/bpfmgr" "$tmp/points/usr/lib/bpfmgr/plugins"
touch "$tmp/points/usr/bin/bpfmgr"
unshare --mount --propagation private -- sh -c '
  set -e
  mount -t overlay overlay -o "lowerdir=$1/usr/bin:/usr/bin" /usr/bin
  mount -t overlay overlay -o "lowerdir=$1/usr/lib:/usr/lib" /usr/lib
  mount -t overlay overlay -o "lowerdir=$1/etc:/etc" /etc
  mount --bind "$2" /usr/bin/bpfmgr
  mount --bind "$3" /usr/lib/bpfmgr/plugins
  mount --bind "$4" /etc/bpfmgr
  shift 4
  exec setpriv --bounding-set "$0" --inh-caps=-all --no-new-privs -- "$@"' "$bounding" "$tmp/points" "$build/bin/bpfmgr" "$build/lib/bpfmgr/plugins" "$cm" \
  "${argv[@]}" > "$tmp/serve.log" 2>&1 &
serve_pid=$!
up=
for _ in $(seq 1 200); do
  if curl -fsS "http://127.0.0.1:$port/metrics" 2>/dev/null |
     grep -q '^bpfmgr_instance_up{instance_name="probes"} 1$'; then up=1; break; fi
  kill -0 "$serve_pid" 2>/dev/null || break
  sleep 0.1
done
if [[ -z $up ]]; then echo "FAIL: serve did not come up"; cat "$tmp/serve.log"; exit 1; fi
curl -fsS "http://127.0.0.1:$port/healthz" | grep -qx ok
curl -fsS "http://127.0.0.1:$port/readyz" | grep -q '^ready: 1 instance'
grep -q '"level":"info"' "$tmp/serve.log"  # --log-format json
# A ConfigMap update as kubelet makes it: applied without a restart.
mkdir "$cm/..2026_01_01_00_01_00.2"
sed 's/^kinds = .*/kinds = ["connect", "close"]/' "$cm/..2026_01_01_00_00_00.1/manifest.toml" \
  > "$cm/..2026_01_01_00_01_00.2/manifest.toml"
ln -s ..2026_01_01_00_01_00.2 "$cm/..data_tmp"
mv -T "$cm/..data_tmp" "$cm/..data"
for _ in $(seq 1 100); do grep -q 'updated \[probes\]' "$tmp/serve.log" && break; sleep 0.1; done
grep -q 'updated \[probes\]' "$tmp/serve.log" || { echo "FAIL: update not applied"; cat "$tmp/serve.log"; exit 1; }
# Pod deletion: TERM, exit 0 within the grace period, programs keep running.
kill -TERM "$serve_pid"
rc=0; wait "$serve_pid" || rc=$?
serve_pid=
[[ $rc == 0 ]] || { echo "FAIL: exit $rc on TERM"; cat "$tmp/serve.log"; exit 1; }
[[ -e $pin_root/probes/state ]] || { echo "FAIL: pins gone after TERM"; exit 1; }
cat "$tmp/serve.log"
echo "kubernetes: objects valid; entrypoint served, applied a ConfigMap swap, stopped cleanly"
