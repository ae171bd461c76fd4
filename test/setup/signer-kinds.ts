// Tests build configs synchronously with buildConfig/signerFromConfig, the step `loadConfig` runs
// after importing the signer modules a file names. The repository has every SDK (devDependencies),
// so every kind is loaded up front here; the lazy loading itself, and the message for a missing
// SDK, are tested on the packed tarball (test/package/consumer.test.ts).
import { SIGNER_KINDS, loadSignerKind } from '../../src/server/signer-config.js';

for (const kind of Object.keys(SIGNER_KINDS)) await loadSignerKind(kind);
