/**
 * The worked examples of docs/signers.md are tests: each `<!-- worked-example: {...} -->` is
 * followed by a YAML config and, in the next `text` block, the exact URL it must produce.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { describe, expect, it } from 'vitest';
import { parseDuration } from '../../src/duration.js';
import { signerFromConfig } from '../../src/server/signer-config.js';

interface Example {
  input: { repository: string; digest: string; at: string };
  config: { signer: unknown; expiry?: string | number };
  url: string;
}

function examples(markdown: string): Example[] {
  const out: Example[] = [];
  const re = /<!-- worked-example: (\{.*?\}) -->\s*```yaml\n([\s\S]*?)```[\s\S]*?```text\n(.*?)\n```/g;
  for (let m = re.exec(markdown); m; m = re.exec(markdown)) {
    out.push({ input: JSON.parse(m[1]!) as Example['input'], config: parseYaml(m[2]!) as Example['config'], url: m[3]! });
  }
  return out;
}

const doc = readFileSync(new URL('../../docs/signers.md', import.meta.url), 'utf8');
const found = examples(doc);

describe('docs/signers.md worked examples', () => {
  it('finds every worked example in the document', () => {
    expect(found).toHaveLength((doc.match(/<!-- worked-example:/g) ?? []).length);
    expect(found.length).toBeGreaterThanOrEqual(4);
  });

  it.each(found.map((e) => [Object.keys(e.config.signer as object)[0], (e.config.signer as Record<string, { preset?: string }>).hmac?.preset ?? 'custom', e] as const))(
    '%s %s: the config produces exactly the documented URL',
    async (_kind, _preset, { input, config, url }) => {
      const signer = signerFromConfig(config.signer, 'signer', {
        expiry: parseDuration(config.expiry ?? '20m', 'expiry'),
        now: () => Date.parse(input.at),
      });
      const signed = await signer.sign({ repository: input.repository, digest: input.digest, method: 'GET' });
      expect(signed.url).toBe(url);
    },
  );
});
