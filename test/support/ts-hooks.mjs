// Module resolve hook for running the TypeScript sources directly with Node >= 22.18 (type
// stripping): sources import siblings as `./x.js` (NodeNext); when no such file exists, use `./x.ts`.
export async function resolve(specifier, context, next) {
  try {
    return await next(specifier, context);
  } catch (err) {
    if (err && err.code === 'ERR_MODULE_NOT_FOUND' && specifier.startsWith('.') && specifier.endsWith('.js')) {
      return next(`${specifier.slice(0, -3)}.ts`, context);
    }
    throw err;
  }
}
