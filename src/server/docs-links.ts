/** Where the config file is documented; test/deploy/readme-links.test.ts keeps the anchor real. */
export const CONFIG_DOCS = 'README.md#reverse-proxy-registry-redirect-serve---config-proxyyaml';
