// The results table (stdout and docs), the JSON file and the SVG chart.
//
// A row: { id, title, ours, baseline, value, unit, target?: { op: '>=' | '<=', value }, note? }.
// `value` is the figure the target is about (a ratio of two things measured in the same run, or
// for scenarios 6 and 7 an absolute bound); `met` and the shortfall are computed here, never typed in.

/** Evaluates a row's target: met, and by how much it is missed. */
export function judge(row) {
  if (!row.target || !Number.isFinite(row.value)) return { ...row, met: row.target ? false : undefined };
  const { op, value: t } = row.target;
  const met = op === '>=' ? row.value >= t : row.value <= t;
  // score > 1: met with room; < 1: missed. Higher-is-better: value/target; lower-is-better: target/value.
  const score = op === '>=' ? row.value / t : row.value === 0 ? Infinity : t / row.value;
  return { ...row, met, score };
}

export function fmtValue(value, unit) {
  if (!Number.isFinite(value)) return value === Infinity ? '∞' : 'n/a';
  if (unit === 'x') return `${value >= 100 ? Math.round(value) : value >= 10 ? value.toFixed(1) : value.toFixed(2)}x`;
  if (unit === 'µs') return `${value.toFixed(value < 10 ? 2 : 1)} µs`;
  if (unit === 'MiB') return `${value.toFixed(1)} MiB`;
  if (unit === 'B') return `${Math.round(value).toLocaleString('en-US')} B`;
  return `${value} ${unit}`;
}

export function verdict(row) {
  if (!row.target) return '';
  if (!Number.isFinite(row.value) && row.value !== Infinity) return 'NOT MEASURED';
  if (row.met) return 'met';
  const t = row.target.value;
  const pct = row.target.op === '>=' ? (1 - row.value / t) * 100 : (row.value / t - 1) * 100;
  return `MISSED by ${fmtValue(Math.abs(row.value - t), row.unit)} (${pct.toFixed(0)}%)`;
}

const targetText = (row) => (row.target ? `${row.target.op} ${fmtValue(row.target.value, row.unit)}` : '');

/** Plain-text table for stdout. */
export function textTable(rows) {
  const head = ['#', 'scenario', 'ours', 'baseline', 'value', 'target', 'result'];
  const body = rows.map((r) => [r.id, r.title, r.ours ?? '', r.baseline ?? '', fmtValue(r.value, r.unit), targetText(r), verdict(r)]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => String(b[i]).length)));
  const line = (cells) => cells.map((c, i) => String(c).padEnd(widths[i])).join('  ').trimEnd();
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

/** Markdown table (for docs/performance.md). */
export function markdownTable(rows) {
  const esc = (s) => String(s).replace(/\|/g, '\\|');
  const out = ['| # | scenario | ours | baseline | value | target | result |', '|---|---|---|---|---|---|---|'];
  for (const r of rows) out.push(`| ${r.id} | ${esc(r.title)} | ${esc(r.ours ?? '')} | ${esc(r.baseline ?? '')} | ${fmtValue(r.value, r.unit)} | ${esc(targetText(r))} | ${verdict(r)} |`);
  return out.join('\n');
}

/** Writes `<base>.svg` (chart) and `<base>.md` (table) for a results object (as in the JSON file). */
export function writeArtifacts(result, base, writeFileSync) {
  const rows = result.rows.map((r) => ({ ...r, value: r.value ?? Number.NaN, score: r.score ?? (r.value === 0 ? Infinity : undefined) }));
  const m = result.machine;
  const subtitle = `${result.mode} run ${result.date.slice(0, 16).replace('T', ' ')} UTC, ${m.cpus} shared CPUs (load avg ${m.loadAverageBefore[0].toFixed(1)} before), Node ${m.node}, ${m.loadGenerator}`;
  writeFileSync(`${base}.svg`, `${svgChart(rows, { title: 'registry-redirect: targets of issue 6 (ratios measured in one run)', subtitle })}\n`);
  writeFileSync(`${base}.md`, `${markdownTable(rows)}\n`);
}

const xmlEscape = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/**
 * Horizontal bar chart of every row with a target: bar length is how far the target is met
 * (score = value/target, or target/value for "at most" targets) on a log scale; the line at 1 is
 * the target. Green: met; red: missed. Labels carry the real value and target.
 */
export function svgChart(rows, { title, subtitle }) {
  const judged = rows.filter((r) => r.target);
  const rowH = 26;
  const left = 430;
  const width = 1000;
  const plotW = width - left - 170;
  const top = 70;
  const height = top + judged.length * rowH + 50;
  const scores = judged.map((r) => (Number.isFinite(r.score) ? r.score : 1));
  const lo = Math.min(0.25, ...scores.map((s) => s / 1.5));
  const hi = Math.max(4, ...scores.map((s) => s * 1.5));
  const x = (s) => left + ((Math.log10(Math.max(s, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * plotW;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="16" y="24" font-size="16" font-weight="bold">${xmlEscape(title)}</text>`,
    `<text x="16" y="44" fill="#555">${xmlEscape(subtitle)}</text>`,
  ];
  for (const tick of [0.1, 0.25, 0.5, 1, 2, 5, 10, 100, 1000, 10000]) {
    if (tick < lo || tick > hi) continue;
    const tx = x(tick);
    parts.push(`<line x1="${tx}" y1="${top - 6}" x2="${tx}" y2="${top + judged.length * rowH}" stroke="${tick === 1 ? '#000' : '#ddd'}" stroke-width="${tick === 1 ? 1.5 : 1}"/>`);
    parts.push(`<text x="${tx}" y="${top + judged.length * rowH + 16}" text-anchor="middle" fill="#555">${tick === 1 ? 'target' : `${tick}×`}</text>`);
  }
  judged.forEach((r, i) => {
    const y = top + i * rowH;
    const s = Number.isFinite(r.score) ? r.score : hi;
    const x0 = x(lo);
    const x1 = x(Math.min(s, hi));
    const label = `${r.id} ${r.title}`;
    parts.push(`<text x="${left - 8}" y="${y + 16}" text-anchor="end">${xmlEscape(label.length > 64 ? `${label.slice(0, 61)}...` : label)}</text>`);
    parts.push(`<rect x="${x0}" y="${y + 5}" width="${Math.max(1, x1 - x0)}" height="${rowH - 10}" fill="${Number.isFinite(r.value) || r.value === Infinity ? (r.met ? '#2e8b57' : '#c0392b') : '#999'}"/>`);
    parts.push(`<text x="${Math.max(x1, x0) + 6}" y="${y + 16}" fill="#222">${xmlEscape(`${fmtValue(r.value, r.unit)} (target ${targetText(r)})`)}</text>`);
  });
  parts.push(`<text x="16" y="${height - 10}" fill="#555">Bar: how far each target is met, as a multiple of it (value/target, or target/value for "at most" targets), log scale; the black line is the target. Green: met, red: missed.</text>`);
  parts.push('</svg>');
  return parts.join('\n');
}
