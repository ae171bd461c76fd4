import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { prometheusMetrics } from '../../src/metrics.js';
import { ROOT } from '../helpers/package.js';

/**
 * examples/grafana/registry-redirect.json against the Prometheus metrics it charts. Every query is
 * checked statically: known metric names, label names and label values only, counters only
 * inside rate()/increase(), gauges never, the $job/$instance filters everywhere, and balanced
 * brackets. The table below is also checked against the real prom-client registry of
 * src/metrics.ts, so a renamed metric or label fails here.
 */

interface MetricSpec {
  type: 'counter' | 'gauge' | 'histogram';
  labels: string[];
  /** Allowed values for labels with a fixed set. */
  values?: Record<string, string[]>;
}

const METRICS: Record<string, MetricSpec> = {
  registry_redirect_decisions_total: { type: 'counter', labels: ['action', 'signer', 'reason'], values: { action: ['redirect', 'proxy', 'shadow', 'error'] } },
  registry_redirect_sign_duration_seconds: { type: 'histogram', labels: ['signer', 'result'], values: { result: ['ok', 'error'] } },
  registry_redirect_authorize_duration_seconds: { type: 'histogram', labels: ['outcome'], values: { outcome: ['granted', 'denied', 'error'] } },
  registry_redirect_fallbacks_total: { type: 'counter', labels: ['signer', 'reason'], values: { reason: ['signer_error', 'signer_timeout', 'signer_unhealthy'] } },
  registry_redirect_blob_bytes_total: { type: 'counter', labels: ['delivery'], values: { delivery: ['redirected', 'proxied'] } },
  registry_redirect_signer_healthy: { type: 'gauge', labels: ['signer'] },
  registry_redirect_signer_probes_total: { type: 'counter', labels: ['signer', 'result'], values: { result: ['ok', 'error'] } },
  registry_redirect_signed_url_cache_total: { type: 'counter', labels: ['signer', 'result'], values: { result: ['hit', 'miss', 'refresh'] } },
  registry_redirect_config_reloads_total: { type: 'counter', labels: ['result'], values: { result: ['success', 'failure'] } },
  registry_redirect_config_last_reload_success_timestamp_seconds: { type: 'gauge', labels: [] },
};
/** Labels Prometheus adds to every scraped series. */
const TARGET_LABELS = ['job', 'instance'];

interface Target {
  expr: string;
  refId: string;
  datasource?: { uid: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  gridPos: { x: number; y: number; w: number; h: number };
  datasource?: { type: string; uid: string };
  targets?: Target[];
}
const dashboard = JSON.parse(readFileSync(join(ROOT, 'examples/grafana/registry-redirect.json'), 'utf8')) as {
  uid: string;
  title: string;
  schemaVersion: number;
  panels: Panel[];
  templating: { list: Array<{ name: string; type: string; query: unknown }> };
};
const queried = dashboard.panels.filter((p) => p.type !== 'row');
const exprs = queried.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));

/** `name{matchers}` occurrences with what follows them. */
function selectors(expr: string): Array<{ name: string; base: string; matchers: Array<[string, string, string]>; rangeFollows: boolean; inRate: boolean }> {
  return [...expr.matchAll(/(registry_redirect_[a-z_]+)(\{([^}]*)\})?(\[[^\]]+\])?/g)].map((m) => {
    const name = m[1]!;
    const base = name.replace(/_(bucket|count|sum)$/, (suffix) => (METRICS[name.slice(0, -suffix.length)]?.type === 'histogram' ? '' : suffix));
    const matchers = [...(m[3] ?? '').matchAll(/([a-z_]+)\s*(=~|!=|!~|=)\s*"([^"]*)"/g)].map((x) => [x[1]!, x[2]!, x[3]!] as [string, string, string]);
    const before = expr.slice(0, m.index);
    return { name, base, matchers, rangeFollows: m[4] !== undefined, inRate: /(rate|increase)\($/.test(before) };
  });
}

describe('examples/grafana/registry-redirect.json', () => {
  it('is an importable dashboard: uid, schemaVersion, a Prometheus datasource variable, $job and $instance', () => {
    expect(dashboard.uid).toBe('registry-redirect');
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    const vars = Object.fromEntries(dashboard.templating.list.map((v) => [v.name, v]));
    expect(vars.datasource).toMatchObject({ type: 'datasource', query: 'prometheus' });
    expect(vars.job?.type).toBe('query');
    expect(vars.instance?.type).toBe('query');
  });

  it('panels: unique ids, every query on ${datasource}, laid out on the 24-column grid without overlaps', () => {
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const cells = new Set<string>();
    for (const p of dashboard.panels) {
      const { x, y, w, h } = p.gridPos;
      expect(x >= 0 && w > 0 && x + w <= 24 && h > 0, p.title).toBe(true);
      for (let i = x; i < x + w; i++) {
        for (let j = y; j < y + h; j++) {
          expect(cells.has(`${i},${j}`), `${p.title} overlaps at ${i},${j}`).toBe(false);
          cells.add(`${i},${j}`);
        }
      }
      if (p.type === 'row') continue;
      expect(p.datasource?.uid, p.title).toBe('${datasource}');
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets ?? []) expect(t.datasource?.uid ?? '${datasource}').toBe('${datasource}');
    }
  });

  it('every query uses known metrics, labels and label values, filtered by $job and $instance', () => {
    for (const { panel, expr } of exprs) {
      const found = selectors(expr);
      expect(found.length, panel).toBeGreaterThan(0);
      for (const s of found) {
        const spec = METRICS[s.base];
        expect(spec, `${panel}: unknown metric ${s.name}`).toBeDefined();
        const allowed = [...spec!.labels, ...TARGET_LABELS, ...(s.name.endsWith('_bucket') ? ['le'] : [])];
        expect(s.matchers.filter(([l]) => l === 'job' || l === 'instance'), `${panel}: ${s.name} filtered by $job and $instance`).toEqual([
          ['job', '=~', '$job'],
          ['instance', '=~', '$instance'],
        ]);
        for (const [label, op, value] of s.matchers) {
          expect(allowed, `${panel}: ${s.name} has no label ${label}`).toContain(label);
          const values = spec!.values?.[label];
          if (values && op === '=') expect(values, `${panel}: ${label}="${value}"`).toContain(value);
        }
      }
      // Labels used to group must exist on the metrics of that query.
      const labels = new Set(found.flatMap((s) => [...METRICS[s.base]!.labels, ...(s.name.endsWith('_bucket') ? ['le'] : [])]));
      for (const m of expr.matchAll(/\b(?:by|ignoring|on)\s*\(([^)]*)\)/g)) {
        for (const label of m[1]!.split(',').map((l) => l.trim()).filter(Boolean)) expect(labels, `${panel}: grouping by ${label}`).toContain(label);
      }
    }
  });

  it('counters and histograms only inside rate()/increase() over $__rate_interval or $__range; gauges never', () => {
    for (const { panel, expr } of exprs) {
      for (const s of selectors(expr)) {
        const gauge = METRICS[s.base]!.type === 'gauge';
        expect(s.inRate, `${panel}: ${s.name}`).toBe(!gauge);
        expect(s.rangeFollows, `${panel}: ${s.name}`).toBe(!gauge);
      }
      for (const m of expr.matchAll(/\[([^\]]+)\]/g)) expect(['$__rate_interval', '$__range'], panel).toContain(m[1]);
      for (const [open, close] of ['()', '{}', '[]']) {
        expect(expr.split(open!).length, `${panel}: balanced ${open}${close}`).toBe(expr.split(close!).length);
      }
      expect(expr.match(/histogram_quantile\(/g)?.length ?? 0, panel).toBe(expr.match(/_bucket\{/g)?.length ?? 0);
    }
  });

  it('charts what operators ask for: redirect ratio by reason, signer health, latency, bytes offloaded', () => {
    const all = exprs.map((e) => e.expr);
    expect(all.some((e) => /registry_redirect_decisions_total/.test(e) && /by \(action, reason\)/.test(e))).toBe(true);
    expect(all.some((e) => /action="redirect"/.test(e) && /\/ sum\(rate\(registry_redirect_decisions_total/.test(e))).toBe(true);
    expect(all.some((e) => /registry_redirect_signer_healthy/.test(e))).toBe(true);
    expect(all.some((e) => /histogram_quantile\(0\.99, sum by \(le, signer\) \(rate\(registry_redirect_sign_duration_seconds_bucket/.test(e))).toBe(true);
    expect(all.some((e) => /histogram_quantile\(0\.99, sum by \(le\) \(rate\(registry_redirect_authorize_duration_seconds_bucket/.test(e))).toBe(true);
    expect(all.some((e) => /delivery="redirected"/.test(e) && /\/ sum\(rate\(registry_redirect_blob_bytes_total/.test(e))).toBe(true);
    const charted = new Set(exprs.flatMap((e) => selectors(e.expr).map((s) => s.base)));
    expect([...charted].sort()).toEqual(Object.keys(METRICS).sort());
  });

  it('$job and $instance come from a metric a new install already exports, before any pull', async () => {
    const before = await prometheusMetrics({ defaultMetrics: false }).render();
    for (const name of ['job', 'instance']) {
      const query = (dashboard.templating.list.find((v) => v.name === name)!.query as { query: string }).query;
      const metric = /label_values\((registry_redirect_[a-z_]+)/.exec(query)?.[1];
      expect(metric, query).toBeDefined();
      expect(before, `${name}: ${metric} is exported from start`).toMatch(new RegExp(`^${metric} \\S+$`, 'm'));
    }
  });

  it('panels that show a count say 0, not "No data", before the first event', () => {
    const counts = queried.filter((p) => ['short', 'bytes', 'reqps'].includes((p as Panel & { fieldConfig?: { defaults?: { unit?: string } } }).fieldConfig?.defaults?.unit ?? '') && /increase\(|rate\(registry_redirect_(fallbacks|signer_probes)|result="error"|count\(/.test((p.targets ?? []).map((t) => t.expr).join(' ')));
    expect(counts.map((p) => p.title).sort()).toEqual(['Config reloads', 'Fallbacks (range)', 'Fallbacks by signer and reason', 'Signer errors', 'Storage probes', 'Unhealthy signers', 'Bytes offloaded (range)', 'Bytes proxied (range)'].sort());
    for (const p of counts) expect((p as Panel & { fieldConfig?: { defaults?: { noValue?: string } } }).fieldConfig?.defaults?.noValue, p.title).toBe('0');
  });

  it('the metric table matches the prom-client registry of src/metrics.ts (names, types, labels)', () => {
    const { registry } = prometheusMetrics();
    for (const [name, spec] of Object.entries(METRICS)) {
      const metric = registry.getSingleMetric(name) as { labelNames?: string[]; constructor: { name: string } } | undefined;
      expect(metric, name).toBeDefined();
      expect(metric!.constructor.name.toLowerCase(), name).toBe(spec.type);
      expect([...(metric!.labelNames ?? [])].sort(), name).toEqual([...spec.labels].sort());
    }
  });
});
