// Cost of one signed URL per signer, and of a cache hit. Run: npm run build && node bench/signers.js
// Compares side by side in one process (absolute numbers depend on the machine; ratios do not).
import { generateKeyPairSync } from 'node:crypto';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { Bench } from 'tinybench';
import { cachedSigner, hmacSigner } from '../dist/index.js';
import { azureSigner } from '../dist/signers/azure.js';
import { cloudfrontSigner } from '../dist/signers/cloudfront.js';
import { gcsSigner } from '../dist/signers/gcs.js';
import { s3Signer } from '../dist/signers/s3.js';

const pem = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const azuriteKey = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';
const keys = { accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' };
let n = 0;
// A new digest per call, so nothing below is a cache hit unless it says so.
const next = () => ({ repository: 'library/alpine', digest: `sha256:${(++n).toString(16).padStart(64, '0')}`, method: 'GET' });
const fixed = next();

const sdkClient = new S3Client({ region: 'us-east-1', credentials: keys });
const s3 = s3Signer({ bucket: 'registry', region: 'us-east-1', ...keys });
const gcs = gcsSigner({ bucket: 'registry', clientEmail: 'sa@p.iam.gserviceaccount.com', privateKey: pem });
const signers = {
  'azure (SAS, account key)': azureSigner({ account: 'devstoreaccount1', accountKey: azuriteKey, container: 'registry' }),
  's3 (s3Signer: SDK presigner, endpoint resolved once)': s3,
  'gcs (V4, RSA key)': gcs,
  'cloudfront (canned policy, RSA-SHA1)': cloudfrontSigner({ baseUrl: 'https://d1.cloudfront.net', keyPairId: 'K2JCJMDEHXQW5F', privateKey: pem }),
  'hmac (cloudflare preset)': hmacSigner({ baseUrl: 'https://cdn.example.com', key: 'k', preset: 'cloudflare' }),
};
const cachedS3 = cachedSigner(s3);
const cachedGcs = cachedSigner(gcs);
await cachedS3.sign(fixed);
await cachedGcs.sign(fixed);

const bench = new Bench({ time: 1_000 });
bench.add('s3 (AWS SDK getSignedUrl + GetObjectCommand)', async () => {
  const r = next();
  await getSignedUrl(sdkClient, new GetObjectCommand({ Bucket: 'registry', Key: `docker/registry/v2/blobs/sha256/00/${r.digest.slice(7)}/data` }), { expiresIn: 1200 });
});
for (const [name, signer] of Object.entries(signers)) bench.add(name, () => signer.sign(next()));
bench.add('s3 cache hit (cachedSigner)', () => cachedS3.sign(fixed));
bench.add('gcs cache hit (cachedSigner)', () => cachedGcs.sign(fixed));

await bench.run();
console.log(`node ${process.version}`);
console.table(
  bench.tasks.map((t) => ({
    signer: t.name,
    'µs/URL (mean)': t.result.latency ? (t.result.latency.mean * 1_000).toFixed(1) : t.result.state,
    'URLs/s': t.result.throughput ? Math.round(t.result.throughput.mean) : '',
  })),
);
sdkClient.destroy();
await s3.close();
