/**
 * node:http for the server's modules, taken with process.getBuiltinModule rather than `import`:
 * Node's ES module wrapper of node:http reads every export, and its lazy ones load undici (~20 ms
 * of every start).
 */
export const { createServer, ServerResponse } = process.getBuiltinModule('node:http');
