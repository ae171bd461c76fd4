import { execFile } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { z } from 'zod';
import { AZURITE_KEY } from '../helpers/constants.js';
import { ROOT } from '../helpers/package.js';
import { validateProxyConfig } from '../helpers/proxy-config.js';
import { findBinary } from '../support/binaries.js';

/**
 * examples/kubernetes: a kustomize base and a Helm chart. Without a cluster or helm here, the base
 * is read file by file as kustomize would (and rendered with `kubectl kustomize` when kubectl is
 * installed). The chart is checked statically: values against values.schema.json, template
 * references against values.yaml and _helpers.tpl, balanced blocks, and the same invariants as the
 * base.
 */

const K8S = join(ROOT, 'examples/kubernetes');
const CHART = join(K8S, 'helm/registry-redirect');
const read = (path: string): string => readFileSync(path, 'utf8');

type Manifest = { apiVersion: string; kind: string; metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> }; spec?: any }; // eslint-disable-line @typescript-eslint/no-explicit-any

const kustomization = parse(read(join(K8S, 'kustomization.yaml'))) as {
  resources: string[];
  labels: Array<{ pairs: Record<string, string>; includeSelectors: boolean }>;
  configMapGenerator: Array<{ name: string; files: string[] }>;
  images: Array<{ name: string; newName: string; newTag: string }>;
};
const manifests: Manifest[] = kustomization.resources.flatMap((file) => parseAllDocuments(read(join(K8S, file))).map((d) => d.toJS() as Manifest));
const byKind = (kind: string): Manifest => {
  const found = manifests.filter((m) => m.kind === kind);
  expect(found, kind).toHaveLength(1);
  return found[0]!;
};
const deployment = byKind('Deployment');
const container = deployment.spec.template.spec.containers[0];
const env = { AZURE_STORAGE_KEY: AZURITE_KEY };

describe('examples/kubernetes (kustomize base)', () => {
  it('lists every resource file it ships, and each parses to a named Kubernetes object', () => {
    const files = readdirSync(K8S).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml' && f !== 'proxy.yaml');
    const optional = ['servicemonitor.yaml', 'ingress.example.yaml'];
    expect([...kustomization.resources, ...optional].sort()).toEqual(files.sort());
    for (const file of optional) expect(read(join(K8S, 'kustomization.yaml'))).toContain(`# - ${file}`);
    for (const m of [...manifests, ...optional.map((f) => parse(read(join(K8S, f))) as Manifest)]) {
      expect(m.apiVersion).toBeTruthy();
      expect(m.metadata.name).toBe('registry-redirect');
    }
    expect(manifests.map((m) => m.kind).sort()).toEqual(['Deployment', 'HorizontalPodAutoscaler', 'PodDisruptionBudget', 'Service', 'ServiceAccount']);
  });

  it('the ConfigMap content (proxy.yaml) is a valid proxy config listening on the container port', async () => {
    expect(kustomization.configMapGenerator).toEqual([{ name: 'registry-redirect-config', files: ['proxy.yaml'] }]);
    const config = await validateProxyConfig(read(join(K8S, 'proxy.yaml')), env);
    expect(config.listen).toEqual({ host: '0.0.0.0', port: 8080 });
    expect(config.metrics?.listen).toEqual({ host: '0.0.0.0', port: 9090 });
    expect(container.ports).toContainEqual({ name: 'http', containerPort: config.listen.port, protocol: 'TCP' });
    expect(config.timeouts.shutdown / 1000 + 5).toBeLessThan(deployment.spec.template.spec.terminationGracePeriodSeconds);
    const raw = parse(read(join(K8S, 'proxy.yaml'))) as { metrics: { listen: string } };
    expect(raw.metrics.listen).toBe(':9090');
    expect(container.ports).toContainEqual({ name: 'metrics', containerPort: 9090, protocol: 'TCP' });
    expect(deployment.spec.template.metadata.annotations['prometheus.io/port']).toBe('9090');
  });

  it('Deployment: readiness on /readyz, liveness on /healthz, non-root, read-only root FS, no privilege escalation, resources', () => {
    const pod = deployment.spec.template.spec;
    expect(container.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'http' });
    expect(container.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'http' });
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 1000, runAsGroup: 1000, seccompProfile: { type: 'RuntimeDefault' } });
    expect(container.securityContext).toEqual({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, privileged: false, capabilities: { drop: ['ALL'] } });
    expect(container.resources.requests).toEqual({ cpu: '100m', memory: '128Mi' });
    expect(container.resources.limits.memory).toBe('256Mi');
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(deployment.spec.strategy.rollingUpdate.maxUnavailable).toBe(0);
    // The user the image runs as (Dockerfile USER) is the one the pod asserts.
    expect(read(join(ROOT, 'Dockerfile'))).toMatch(new RegExp(`^USER ${pod.securityContext.runAsUser}:${pod.securityContext.runAsGroup}$`, 'm'));
  });

  it('Deployment: config from the generated ConfigMap, the key from a Secret reference (never a literal), a writable /tmp', () => {
    const pod = deployment.spec.template.spec;
    const configVolume = pod.volumes.find((v: { name: string }) => v.name === 'config');
    expect(configVolume.configMap.name).toBe('registry-redirect-config');
    expect(container.volumeMounts).toContainEqual({ name: 'config', mountPath: '/etc/registry-redirect', readOnly: true });
    expect(container.args).toEqual(['serve', '--config', '/etc/registry-redirect/proxy.yaml']);
    expect(container.env).toEqual([{ name: 'AZURE_STORAGE_KEY', valueFrom: { secretKeyRef: { name: 'registry-redirect-azure', key: 'account-key' } } }]);
    expect(read(join(K8S, 'proxy.yaml'))).toMatch(/accountKey: \$\{AZURE_STORAGE_KEY\}/);
    expect(container.volumeMounts).toContainEqual({ name: 'tmp', mountPath: '/tmp' });
    expect(pod.serviceAccountName).toBe(byKind('ServiceAccount').metadata.name);
  });

  it('Service, HPA and PDB point at the Deployment and its named ports', () => {
    const service = byKind('Service');
    expect(service.spec.selector).toEqual(deployment.spec.selector.matchLabels);
    expect(deployment.spec.template.metadata.labels).toMatchObject(deployment.spec.selector.matchLabels);
    const portNames = container.ports.map((p: { name: string }) => p.name);
    for (const port of service.spec.ports) expect(portNames).toContain(port.targetPort);
    const hpa = byKind('HorizontalPodAutoscaler');
    expect(hpa.spec.scaleTargetRef).toEqual({ apiVersion: 'apps/v1', kind: 'Deployment', name: deployment.metadata.name });
    expect(hpa.spec.minReplicas).toBeGreaterThanOrEqual(2);
    expect(byKind('PodDisruptionBudget').spec.selector.matchLabels).toEqual(deployment.spec.selector.matchLabels);
  });

  it.skipIf(!findBinary('kubectl'))('kubectl kustomize renders it: hashed ConfigMap name wired into the Deployment, common labels on selectors', async () => {
    const { stdout } = await promisify(execFile)('kubectl', ['kustomize', K8S], { timeout: 30_000 });
    const rendered = parseAllDocuments(stdout).map((d) => d.toJS() as Manifest);
    const configMap = rendered.find((m) => m.kind === 'ConfigMap')!;
    expect(configMap.metadata.name).toMatch(/^registry-redirect-config-[a-z0-9]{10}$/);
    const dep = rendered.find((m) => m.kind === 'Deployment')!;
    expect(dep.spec.template.spec.volumes[0].configMap.name).toBe(configMap.metadata.name);
    expect(dep.spec.selector.matchLabels).toMatchObject(kustomization.labels[0]!.pairs);
    expect(dep.spec.template.spec.containers[0].image).toBe(`${kustomization.images[0]!.newName}:${kustomization.images[0]!.newTag}`);
    expect((await validateProxyConfig((configMap as unknown as { data: Record<string, string> }).data['proxy.yaml']!, env)).listen.port).toBe(8080);
  });
});

describe('examples/kubernetes/helm/registry-redirect (Helm chart, checked without helm)', () => {
  const chart = parse(read(join(CHART, 'Chart.yaml'))) as Record<string, string>;
  const values = parse(read(join(CHART, 'values.yaml'))) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  const schema = z.fromJSONSchema(JSON.parse(read(join(CHART, 'values.schema.json'))) as Parameters<typeof z.fromJSONSchema>[0]);
  const templates = readdirSync(join(CHART, 'templates')).map((f) => ({ file: f, text: read(join(CHART, 'templates', f)) }));
  const pkg = JSON.parse(read(join(ROOT, 'package.json'))) as { version: string };

  it('Chart.yaml: apiVersion v2, semver version, appVersion = the package version', () => {
    expect(chart.apiVersion).toBe('v2');
    expect(chart.name).toBe('registry-redirect');
    expect(chart.version).toMatch(/^\d+\.\d+\.\d+$/);
    expect(chart.appVersion).toBe(pkg.version);
  });

  it('values.yaml satisfies values.schema.json, and the schema rejects typos and unsafe settings', () => {
    expect(schema.safeParse(values).success).toBe(true);
    expect(schema.safeParse({ ...values, replicas: 3 }).success).toBe(false);
    expect(schema.safeParse({ ...values, securityContext: { ...values.securityContext, allowPrivilegeEscalation: true } }).success).toBe(false);
    expect(schema.safeParse({ ...values, podSecurityContext: { ...values.podSecurityContext, runAsNonRoot: false } }).success).toBe(false);
    expect(schema.safeParse({ ...values, config: { ...values.config, listen: ':9000' } }).success).toBe(false);
    expect(schema.safeParse({ ...values, image: { ...values.image, pullPolicy: 'Sometimes' } }).success).toBe(false);
  });

  it('the default config value is a valid proxy config', async () => {
    const config = await validateProxyConfig(values.config, env);
    expect(config.listen.port).toBe(8080);
    expect(values.config.metrics.listen).toBe(`:${values.metrics.port}`);
    expect(config.metrics?.listen?.port).toBe(values.metrics.port);
  });

  it('every .Values path a template uses exists in values.yaml', () => {
    const used = new Set(templates.flatMap((t) => [...t.text.matchAll(/\.Values((?:\.[A-Za-z][A-Za-z0-9]*)+)/g)].map((m) => m[1]!.slice(1))));
    expect(used.size).toBeGreaterThan(15);
    for (const path of used) {
      let node: unknown = values;
      for (const key of path.split('.')) {
        expect(node !== null && typeof node === 'object' && key in (node as object), `.Values.${path}`).toBe(true);
        node = (node as Record<string, unknown>)[key];
      }
    }
  });

  it('every include names a define of _helpers.tpl; if/with/range/define blocks are balanced in every file', () => {
    const helpers = templates.find((t) => t.file === '_helpers.tpl')!.text;
    const defined = new Set([...helpers.matchAll(/\{\{-?\s*define "([^"]+)"/g)].map((m) => m[1]));
    for (const t of templates) {
      for (const m of t.text.matchAll(/include "([^"]+)"/g)) expect(defined, `${t.file}: include "${m[1]}"`).toContain(m[1]);
      const actions = [...t.text.matchAll(/\{\{-?\s*(if|with|range|define|else|end)\b/g)].map((m) => m[1]);
      let depth = 0;
      for (const a of actions) {
        if (a === 'end') depth--;
        else if (a !== 'else') depth++;
        expect(depth, `${t.file}: more ends than blocks`).toBeGreaterThanOrEqual(0);
      }
      expect(depth, `${t.file}: unclosed block`).toBe(0);
      expect(t.text.split('{{').length, `${t.file}: unbalanced braces`).toBe(t.text.split('}}').length);
    }
  });

  it('the chart encodes the same safety settings and probes as the kustomize base', () => {
    const deploymentTemplate = templates.find((t) => t.file === 'deployment.yaml')!.text;
    expect(values.probes).toEqual({ readinessPath: container.readinessProbe.httpGet.path, livenessPath: container.livenessProbe.httpGet.path });
    expect(values.securityContext).toEqual(container.securityContext);
    expect(values.podSecurityContext).toEqual(deployment.spec.template.spec.securityContext);
    expect(values.resources).toEqual(container.resources);
    for (const needle of ['toYaml .Values.securityContext', 'toYaml .Values.podSecurityContext', 'toYaml .Values.resources', '.Values.probes.readinessPath', '.Values.probes.livenessPath', 'checksum/config']) {
      expect(deploymentTemplate).toContain(needle);
    }
    for (const kind of ['Deployment', 'Service', 'ConfigMap', 'HorizontalPodAutoscaler', 'PodDisruptionBudget', 'ServiceAccount', 'ServiceMonitor']) {
      expect(templates.some((t) => new RegExp(`^kind: ${kind}$`, 'm').test(t.text)), kind).toBe(true);
    }
  });
});
