import { describe, expect, it } from 'vitest';
import { completeObserver, prometheusMetrics } from '../../src/metrics.js';

describe('prometheusMetrics', () => {
  it('exposes the documented metric names, each with HELP and TYPE', async () => {
    const m = prometheusMetrics();
    const text = await m.render();
    for (const [name, type] of [
      ['registry_redirect_decisions_total', 'counter'],
      ['registry_redirect_sign_duration_seconds', 'histogram'],
      ['registry_redirect_authorize_duration_seconds', 'histogram'],
      ['registry_redirect_fallbacks_total', 'counter'],
      ['registry_redirect_blob_bytes_total', 'counter'],
      ['registry_redirect_signer_healthy', 'gauge'],
      ['registry_redirect_signer_probes_total', 'counter'],
      ['registry_redirect_signed_url_cache_total', 'counter'],
      ['registry_redirect_config_reloads_total', 'counter'],
      ['registry_redirect_config_last_reload_success_timestamp_seconds', 'gauge'],
    ]) {
      expect(text).toContain(`# HELP ${name} `);
      expect(text).toContain(`# TYPE ${name} ${type}`);
    }
  });

  it('each instance has its own registry (two servers in one process do not clash)', async () => {
    const a = prometheusMetrics();
    const b = prometheusMetrics();
    a.decision('redirect', 'default', 'default');
    expect(await a.render()).toContain('registry_redirect_decisions_total{action="redirect",signer="default",reason="default"} 1');
    expect(await b.render()).not.toContain('signer="default",reason="default"} 1');
  });

  it('retainSigners drops health series of signers a reload removed', async () => {
    const m = prometheusMetrics();
    m.signerHealth('default', true);
    m.signerHealth('old-cdn', false);
    m.retainSigners(['default', 'new-cdn']);
    const text = await m.render();
    expect(text).toContain('registry_redirect_signer_healthy{signer="default"} 1');
    expect(text).not.toContain('old-cdn');
  });

  it('ignores non-positive and non-finite byte counts', async () => {
    const m = prometheusMetrics();
    m.bytes('proxied', Number.NaN);
    m.bytes('proxied', -5);
    m.bytes('proxied', 10);
    expect(await m.render()).toContain('registry_redirect_blob_bytes_total{delivery="proxied"} 10');
  });

  it('counts reloads and stamps the last success', async () => {
    const m = prometheusMetrics();
    m.reloaded(false);
    m.reloaded(true);
    const text = await m.render();
    expect(text).toContain('registry_redirect_config_reloads_total{result="failure"} 1');
    expect(text).toContain('registry_redirect_config_reloads_total{result="success"} 1');
  });
});

describe('completeObserver', () => {
  it('fills missing methods with no-ops and keeps `this` for class-based observers', () => {
    class Counting {
      n = 0;
      decision() {
        this.n++;
      }
    }
    const c = new Counting();
    const o = completeObserver(c);
    o.decision('redirect', 'default', 'default');
    o.bytes('proxied', 1);
    expect(c.n).toBe(1);
    expect(() => completeObserver(undefined).probe('x', true)).not.toThrow();
  });
});
