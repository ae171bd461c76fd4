// The config validation helpers live in the library (the rollout policy is validated there too);
// server modules keep importing them from here.
export { parseConfigPart, suggestKey } from '../validate.js';
