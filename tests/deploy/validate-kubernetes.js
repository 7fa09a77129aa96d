// Validates every object in the given YAML files against the Kubernetes
// API's OpenAPI schema (kubernetes-models; the ServiceMonitor against the
// Prometheus Operator's CRD schema): required fields, types, enums and
// formats. The published schemas allow unknown fields, so a misspelt field
// name is not caught here (kubectl's server-side validation would).
// Usage: node validate-kubernetes.js FILE.yaml...   (exit 1 on any problem)
'use strict';
const fs = require('fs');
const yaml = require('js-yaml');

const models = {
  'v1/ConfigMap': () => require('kubernetes-models/v1').ConfigMap,
  'v1/Namespace': () => require('kubernetes-models/v1').Namespace,
  'v1/Service': () => require('kubernetes-models/v1').Service,
  'apps/v1/DaemonSet': () => require('kubernetes-models/apps/v1').DaemonSet,
  'monitoring.coreos.com/v1/ServiceMonitor': () =>
    require('@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1').ServiceMonitor,
};

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
      checked++;
      console.log(`ok ${where}`);
    } catch (e) {
      console.error(`${where}: ${e.message}`);
      failed++;
    }
  }
}
console.log(`${checked} object(s) valid, ${failed} problem(s)`);
process.exit(failed || checked === 0 ? 1 : 0);
