/**
 * A strict reader of the Prometheus text exposition format 0.0.4: every line is a HELP, a TYPE, a
 * sample or empty; HELP and TYPE once per family, before its samples; names and label names valid;
 * label values escaped; no duplicate series; counters end in _total; histograms cumulative with
 * le="+Inf" equal to _count and a _sum.
 */
export function strictExposition(text: string): string[] {
  const problems: string[] = [];
  const METRIC = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
  const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
  const help = new Set<string>();
  const types = new Map<string, string>();
  const sampled = new Set<string>();
  const series = new Set<string>();
  const familyOf = (name: string) => {
    for (const suffix of ['_bucket', '_sum', '_count', '']) {
      if (name.endsWith(suffix) && types.has(name.slice(0, name.length - suffix.length))) return name.slice(0, name.length - suffix.length);
    }
    return undefined;
  };
  const histograms = new Map<string, { buckets: Map<string, [number, number][]>; sum: Set<string>; count: Map<string, number> }>();
  if (!text.endsWith('\n')) problems.push('does not end with a line feed');
  for (const [index, line] of text.split('\n').entries()) {
    const at = `line ${index + 1}: ${line.slice(0, 120)}`;
    if (line === '') continue;
    let m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
    if (m) {
      const [, kind = '', name = '', rest = ''] = m;
      if (!METRIC.test(name)) problems.push(`${at}: invalid metric name`);
      if (kind === 'HELP') {
        if (help.has(name)) problems.push(`${at}: second HELP`);
        if (sampled.has(name)) problems.push(`${at}: HELP after samples`);
        if (/\\[^\\n]/.test(rest.replace(/\\\\/g, ''))) problems.push(`${at}: bad escape in HELP`);
        help.add(name);
      } else {
        if (types.has(name)) problems.push(`${at}: second TYPE`);
        if (sampled.has(name)) problems.push(`${at}: TYPE after samples`);
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(rest)) problems.push(`${at}: unknown type`);
        if (rest === 'counter' && !name.endsWith('_total')) problems.push(`${at}: counter not ending in _total`);
        types.set(name, rest);
        if (rest === 'histogram') histograms.set(name, { buckets: new Map(), sum: new Set(), count: new Map() });
      }
      continue;
    }
    if (line.startsWith('#')) continue;
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?$/.exec(line);
    if (!m) {
      problems.push(`${at}: not a sample`);
      continue;
    }
    const [, name = '', , body = '', value = ''] = m;
    const labels: [string, string][] = [];
    let rest = body;
    while (rest !== '') {
      const label = /^([^=]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/.exec(rest);
      if (!label) {
        problems.push(`${at}: bad label set`);
        break;
      }
      const [whole, labelName = '', labelValue = ''] = label;
      if (!LABEL.test(labelName)) problems.push(`${at}: invalid label name ${labelName}`);
      if (labels.some(([n]) => n === labelName)) problems.push(`${at}: repeated label ${labelName}`);
      labels.push([labelName, labelValue]);
      rest = rest.slice(whole.length);
    }
    if (!/^(NaN|[+-]Inf|[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)$/.test(value)) problems.push(`${at}: bad value`);
    const family = familyOf(name);
    if (family === undefined) problems.push(`${at}: sample without TYPE`);
    else sampled.add(family);
    const key = `${name}{${labels.map(([n, v]) => `${n}=${v}`).sort().join(',')}}`;
    if (series.has(key)) problems.push(`${at}: duplicate series`);
    series.add(key);
    const histogram = family && histograms.get(family);
    if (histogram) {
      const others = labels.filter(([n]) => n !== 'le').map(([n, v]) => `${n}=${v}`).sort().join(',');
      if (name === `${family}_bucket`) {
        const le = labels.find(([n]) => n === 'le')?.[1];
        if (le === undefined) problems.push(`${at}: bucket without le`);
        else histogram.buckets.set(others, [...(histogram.buckets.get(others) ?? []), [le === '+Inf' ? Infinity : Number(le), Number(value)]]);
      } else if (name === `${family}_sum`) histogram.sum.add(others);
      else if (name === `${family}_count`) histogram.count.set(others, Number(value));
      else problems.push(`${at}: stray sample in histogram`);
    }
  }
  for (const [family, { buckets, sum, count }] of histograms) {
    for (const [others, list] of buckets) {
      const sorted = [...list].sort((a, b) => a[0] - b[0]);
      if (sorted.some(([, count], i) => i > 0 && count < sorted[i - 1]![1])) problems.push(`${family}{${others}}: buckets not cumulative`);
      const inf = sorted.at(-1);
      if (inf?.[0] !== Infinity) problems.push(`${family}{${others}}: no le="+Inf"`);
      else if (count.get(others) !== inf[1]) problems.push(`${family}{${others}}: +Inf ${inf[1]} is not _count ${count.get(others)}`);
      if (!sum.has(others)) problems.push(`${family}{${others}}: no _sum`);
    }
  }
  return problems;
}
