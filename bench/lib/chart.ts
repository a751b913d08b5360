/** A dependency-free SVG bar chart of a bench/run.ts report, for the README. */

interface Stat {
  median: number;
  min: number;
  max: number;
}

interface ChartReport {
  machine: { cpu_model: string; cores: number; memory_gib: number };
  versions: { node: string; opa: string };
  settings: { connections: number; duration_s: number; rounds: number };
  workloads: Record<string, { summary: Record<'arbiter' | 'opa', { decisions_per_s: Stat; p99_ms: Stat }> }>;
}

const COLORS = { arbiter: '#2f6fde', opa: '#8c8c8c' } as const;
const LABELS: Record<string, string> = { verified_claims: 'claims verified', jwt: 'with JWT verification' };
const PANEL = { width: 360, height: 220, top: 50, left: 60 };

export function barChartSvg(report: ChartReport): string {
  const names = Object.keys(report.workloads);
  const panels = [
    panel('Decisions per second (higher is better)', names, report, (s) => s.decisions_per_s, (v) => v.toFixed(0), 0),
    panel('p99 latency, ms (lower is better)', names, report, (s) => s.p99_ms, (v) => v.toFixed(2), PANEL.width + 40),
  ];
  const width = 2 * PANEL.width + 40 + 2 * PANEL.left;
  const height = PANEL.top + PANEL.height + 100;
  const { machine, versions, settings } = report;
  const footer = `${machine.cpu_model}, ${machine.cores} cores, ${machine.memory_gib} GiB · Node ${versions.node} · OPA ${versions.opa} · ${settings.connections} connections, ${settings.rounds} x ${settings.duration_s} s per system; bars: median, whiskers: min-max`;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="${PANEL.left}" y="22" font-size="15" font-weight="bold">Arbiter vs OPA server, same policy (rego/authz)</text>`,
    legend(width - 220, 14),
    ...panels,
    `<text x="${PANEL.left}" y="${height - 16}" fill="#555" font-size="10">${escape(footer)}</text>`,
    `</svg>`,
    '',
  ].join('\n');
}

function panel(
  title: string,
  names: string[],
  report: ChartReport,
  pick: (s: { decisions_per_s: Stat; p99_ms: Stat }) => Stat,
  format: (value: number) => string,
  offsetX: number,
): string {
  const x0 = PANEL.left + offsetX;
  const y0 = PANEL.top + PANEL.height;
  const max = Math.max(...names.flatMap((n) => (['arbiter', 'opa'] as const).map((s) => pick(report.workloads[n]!.summary[s]).max))) * 1.15;
  const scale = (value: number) => (value / max) * PANEL.height;
  /** y of the top of a bar of this value, to 0.1 px. */
  const top = (value: number) => Math.round((y0 - scale(value)) * 10) / 10;
  const groupWidth = PANEL.width / names.length;
  const barWidth = Math.min(60, groupWidth / 3);
  const parts = [
    `<text x="${x0}" y="${PANEL.top - 12}" font-weight="bold">${escape(title)}</text>`,
    `<line x1="${x0}" y1="${y0}" x2="${x0 + PANEL.width}" y2="${y0}" stroke="#333"/>`,
  ];
  names.forEach((name, g) => {
    const center = x0 + groupWidth * (g + 0.5);
    (['arbiter', 'opa'] as const).forEach((system, b) => {
      const stat = pick(report.workloads[name]!.summary[system]);
      const x = center - barWidth + b * barWidth + 2;
      const mid = x + (barWidth - 4) / 2;
      parts.push(
        `<rect x="${x}" y="${top(stat.median)}" width="${barWidth - 4}" height="${Math.round((y0 - top(stat.median)) * 10) / 10}" fill="${COLORS[system]}"/>`,
        `<line x1="${mid}" y1="${top(stat.max)}" x2="${mid}" y2="${top(stat.min)}" stroke="#000"/>`,
        `<text x="${mid}" y="${top(stat.max) - 4}" text-anchor="middle" font-size="10">${format(stat.median)}</text>`,
      );
    });
    parts.push(`<text x="${center}" y="${y0 + 16}" text-anchor="middle">${escape(LABELS[name] ?? name)}</text>`);
  });
  return parts.join('\n');
}

function legend(x: number, y: number): string {
  return (['arbiter', 'opa'] as const)
    .map((system, i) => `<rect x="${x + i * 100}" y="${y}" width="12" height="12" fill="${COLORS[system]}"/><text x="${x + i * 100 + 16}" y="${y + 10}">${system === 'arbiter' ? 'Arbiter' : 'OPA server'}</text>`)
    .join('\n');
}

function escape(text: string): string {
  return text.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');
}
