import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createServerLogger } from '../../src/server/logger.js';

function sink(): { stream: Writable; lines: () => string[] } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      chunks.push(String(chunk));
      done();
    },
  });
  return { stream, lines: () => chunks.join('').split('\n').filter(Boolean) };
}

const missing = (name: string) => async () => {
  throw Object.assign(new Error(`Cannot find package '${name}' imported from /x/logger.js`), { code: 'ERR_MODULE_NOT_FOUND' });
};

describe('createServerLogger', () => {
  it('pretty without the optional pino-pretty package: JSON lines and one warning naming the package', async () => {
    const out = sink();
    const logger = await createServerLogger({ level: 'info', requests: true, format: 'pretty' }, { name: 't' }, { destination: out.stream, importPretty: missing('pino-pretty') });
    logger.info({ a: 1 }, 'hello');
    const [warning, line] = out.lines().map((l) => JSON.parse(l) as { msg: string; a?: number });
    expect(warning!.msg).toMatch(/needs the pino-pretty package \(npm install pino-pretty\)/);
    expect(line).toMatchObject({ msg: 'hello', a: 1 });
  });

  it('any other import failure is not hidden', async () => {
    const out = sink();
    await expect(createServerLogger({ level: 'info', requests: true, format: 'pretty' }, {}, { destination: out.stream, importPretty: missing('colorette') })).rejects.toThrow(/colorette/);
  });

  it('pretty with pino-pretty installed writes human lines, not JSON', async () => {
    const out = sink();
    const logger = await createServerLogger({ level: 'info', requests: true, format: 'pretty' }, { name: 't' }, { destination: out.stream });
    logger.info('hello');
    expect(out.lines().join('\n')).toMatch(/INFO.*hello/);
    expect(() => JSON.parse(out.lines()[0]!)).toThrow();
  });
});
