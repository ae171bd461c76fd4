import type http from 'node:http';
import { ServerResponse } from './node-http.js';

/**
 * The response class of the server's HTTP/1.1 listeners. Node emits `'close'` exactly once per
 * response, finished or not; {@link closeHook} is called then. One property per response costs
 * less than a `once('close')` listener (a wrapper closure, an events entry and its removal).
 */
export class ServedResponse extends ServerResponse {
  /** Called once, when the response closes (set by whoever needs to know; the last setter wins). */
  closeHook: (() => void) | undefined = undefined;

  override emit(event: string | symbol, ...args: unknown[]): boolean {
    if (event === 'close') this.settle();
    return super.emit(event, ...args);
  }

  /** Runs when the response closes, before its `'close'` listeners. */
  protected settle(): void {
    const hook = this.closeHook;
    if (hook !== undefined) {
      this.closeHook = undefined;
      hook();
    }
  }
}

/** Calls `done` once when `res` closes: through its {@link ServedResponse.closeHook}, else a listener. */
export function onResponseClose(res: http.ServerResponse, done: () => void): void {
  if (res instanceof ServedResponse && res.closeHook === undefined) res.closeHook = done;
  else res.once('close', done);
}
