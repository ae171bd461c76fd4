/** Azurite's well-known public development account key (not a secret). */
export const AZURITE_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

/**
 * A proxy config file (YAML) with the Azure signer on Azurite's dev account; the key comes from
 * `${AZURE_STORAGE_KEY}` so tests also exercise environment expansion.
 */
export function azureProxyYaml(opts: { upstream: string; listen?: string; endpoint?: string; extra?: string }): string {
  return `${opts.listen ? `listen: ${opts.listen}\n` : ''}upstream: ${opts.upstream}
signer:
  azure:
    account: devstoreaccount1
    accountKey: \${AZURE_STORAGE_KEY}
    container: registry
    endpoint: ${opts.endpoint ?? 'http://127.0.0.2:10000/devstoreaccount1'}
${opts.extra ?? ''}`;
}
