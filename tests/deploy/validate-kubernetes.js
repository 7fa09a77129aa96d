// Validates every object in the given YAML files against the Kubernetes
// API's OpenAPI schema (kubernetes-models; the ServiceMonitor against the
// Prometheus Operator's CRD schema): required fields, types, enums and
// formats. Those schemas allow unknown fields; the API server's strict
// field validation (kubectl's default since 1.27) refuses them, and so does
// this: every field of a built-in kind is looked up in the API's own model
// (@kubernetes/client-node's attribute maps, generated from the OpenAPI
// spec), so a misspelt `livenesProbe` fails. Plus the API server's
// cross-field rules that matter here (Bidirectional mount propagation only
// for privileged containers).
// Usage: node validate-kubernetes.js FILE.yaml...   (exit 1 on any problem)
'use strict';
const fs = require('fs');
const yaml = require('js-yaml');

const models = {
  'v1/ConfigMap': () => require('kubernetes-models/v1').ConfigMap,
  'v1/Namespace': () => require('kubernetes-models/v1').Namespace,
  'v1/Service': () => require('kubernetes-models/v1').Service,
  'apps/v1/DaemonSet': () => require('kubernetes-models/apps/v1').DaemonSet,
  'scheduling.k8s.io/v1/PriorityClass': () =>
    require('kubernetes-models/scheduling.k8s.io/v1').PriorityClass,
  'monitoring.coreos.com/v1/ServiceMonitor': () =>
    require('@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1').ServiceMonitor,
};

const api = require('@kubernetes/client-node/dist/gen/model/models.js');

// Unknown fields, recursively, against the API model named `type`
// ("V1PodSpec", "Array<V1Container>", "{ [key: string]: string; }", ...).
function unknownFields(value, type, path, out) {
  if (value === null || value === undefined) return;
  let m;
  if ((m = /^Array<(.+)>$/.exec(type))) {
    if (Array.isArray(value)) value.forEach((v, i) => unknownFields(v, m[1], `${path}[${i}]`, out));
    return;
  }
  if ((m = /^\{ \[key: string\]: (.+); \}$/.exec(type))) {
    if (typeof value === 'object') for (const k of Object.keys(value)) unknownFields(value[k], m[1], `${path}.${k}`, out);
    return;
  }
  const model = api[type];
  if (!model || typeof model.getAttributeTypeMap !== 'function') return;  // a scalar
  if (typeof value !== 'object' || Array.isArray(value)) return;  // the schema reports it
  const fields = new Map(model.getAttributeTypeMap().map((a) => [a.baseName, a.type]));
  for (const k of Object.keys(value)) {
    if (!fields.has(k)) {
      const close = [...fields.keys()].filter((f) => editDistance(f, k) <= 2);
      out.push(`${path}.${k}: unknown field of ${type}` +
               (close.length ? ` (did you mean ${close.join(', ')}?)` : ''));
    } else {
      unknownFields(value[k], fields.get(k), `${path}.${k}`, out);
    }
  }
}

function editDistance(a, b) {
  const row = [...Array(b.length + 1).keys()];
  for (let i = 1; i <= a.length; i++) {
    let diag = row[0];
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = row[j];
      row[j] = Math.min(row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return row[b.length];
}

// The API model of a built-in kind: apps/v1 DaemonSet -> V1DaemonSet.
function apiModel(doc) {
  const version = String(doc.apiVersion || '').split('/').pop();
  const name = version.charAt(0).toUpperCase() + version.slice(1) + doc.kind;
  return api[name] ? name : null;
}

// Rules the API server checks beyond the schema.
function crossFieldProblems(doc) {
  const out = [];
  const pod = doc.spec && doc.spec.template && doc.spec.template.spec;
  if (!pod) return out;
  for (const c of [...(pod.containers || []), ...(pod.initContainers || [])])
    for (const m of c.volumeMounts || [])
      if (m.mountPropagation === 'Bidirectional' &&
          !(c.securityContext && c.securityContext.privileged))
        out.push(`container ${c.name}: Bidirectional mount propagation of ${m.mountPath} ` +
                 'needs a privileged container');
  return out;
}

let failed = 0;
let checked = 0;
for (const file of process.argv.slice(2)) {
  const docs = yaml.loadAll(fs.readFileSync(file, 'utf8')).filter((d) => d);
  for (const doc of docs) {
    const key = `${doc.apiVersion}/${doc.kind}`;
    const where = `${file}: ${key} ${doc.metadata && doc.metadata.name}`;
    if (doc.kind === 'Kustomization') {
      for (const r of doc.resources || [])
        if (!fs.existsSync(require('path').join(require('path').dirname(file), r))) {
          console.error(`${where}: resource ${r} does not exist`);
          failed++;
        }
      continue;
    }
    const model = models[key];
    if (!model) {
      console.error(`${where}: no schema known for ${key}`);
      failed++;
      continue;
    }
    try {
      const Model = model();
      new Model(doc).validate();
      const problems = crossFieldProblems(doc);
      const type = apiModel(doc);
      if (type) unknownFields(doc, type, doc.kind, problems);
      if (problems.length) throw new Error(problems.join('; '));
      checked++;
      console.log(`ok ${where}${type ? ' (strict)' : ''}`);
    } catch (e) {
      console.error(`${where}: ${e.message}`);
      failed++;
    }
  }
}
console.log(`${checked} object(s) valid, ${failed} problem(s)`);
process.exit(failed || checked === 0 ? 1 : 0);
