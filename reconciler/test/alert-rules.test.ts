/**
 * Issue 11 item 4: the Prometheus alert rules (deploy/prometheus/wafleet-alerts.yml) pass their
 * `promtool test rules` cases, and they, their test series and the Grafana dashboard
 * (deploy/grafana/wafleet-dashboard.json) name only metrics, and label values, that a real
 * Metrics registry exports, wired as app.ts wires it: rules cannot drift from the code.
 *
 * promtool comes from the Debian package `prometheus`; without it this test fails (never skips).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { PHASES } from '@wafleet/contract';
import { createMetrics } from '../src/metrics.ts';
import { connectGovernorMetrics, workQueueMetrics } from '../src/queue/metrics.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const promDir = path.join(root, 'deploy', 'prometheus');
const RULES = path.join(promDir, 'wafleet-alerts.yml');
const RULE_TESTS = path.join(promDir, 'wafleet-alerts.test.yml');
const DASHBOARD = path.join(root, 'deploy', 'grafana', 'wafleet-dashboard.json');
const PROMTOOL = process.env.PROMTOOL ?? 'promtool';

/** Series that Prometheus itself makes (scrape status, alert state), not the reconciler. */
const FROM_PROMETHEUS = new Set(['up', 'ALERTS', 'ALERTS_FOR_STATE', 'scrape_duration_seconds', 'scrape_samples_scraped']);
/** Target labels that the scrape adds. */
const TARGET_LABELS = new Set(['job', 'instance', 'alertname', 'alertstate']);
const KEYWORDS = new Set(
  'and or unless by without on ignoring group_left group_right bool offset inf nan sum min max avg count stddev stdvar topk bottomk quantile count_values group atan2'.split(' '),
);

function promtool(args: string[], cwd = promDir): { status: number | null; output: string } {
  const r = spawnSync(PROMTOOL, args, { cwd, encoding: 'utf8' });
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ENOENT') {
    throw new Error(`promtool not found (${PROMTOOL}): install the Debian package \`prometheus\` (sudo apt-get install -y prometheus), or set PROMTOOL to its path. The alert rules cannot be tested without it.`);
  }
  if (r.error) throw r.error;
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

// ------------------------------------------------------------------ PromQL and YAML, just enough

/** The metric names a PromQL expression selects (function names, keywords and label names left out). */
export function metricNamesIn(expr: string): string[] {
  const e = expr
    .replace(/\$\{[^}]*\}|\$\w+/g, '') // Grafana variables
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\boffset\s+-?[\dsmhdwy]+/g, ' ');
  const names = new Set<string>();
  for (const m of e.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)) {
    const before = e[m.index - 1] ?? ' ';
    if (/[\d.]/.test(before)) continue; // 1e3, 0.5
    if (/^\s*\(/.test(e.slice(m.index + m[0].length))) continue; // a function
    if (KEYWORDS.has(m[0])) continue;
    names.add(m[0]);
  }
  return [...names];
}

/** `name{label="v", label=~"a|b"}` selectors: the values each equality or plain-alternation matcher asks for. */
export function labelValuesIn(expr: string): Array<{ metric: string; label: string; values: string[] }> {
  const out: Array<{ metric: string; label: string; values: string[] }> = [];
  for (const sel of expr.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}/g)) {
    for (const m of sel[2]!.matchAll(/(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"/g)) {
      const [, label, op, value] = m as unknown as [string, string, string, string];
      if (op === '=') out.push({ metric: sel[1]!, label, values: [value] });
      else if (op === '=~' && /^[\w-]+(\|[\w-]+)*$/.test(value)) out.push({ metric: sel[1]!, label, values: value.split('|') });
    }
  }
  return out;
}

/** The values of `key:` in our rule files: single-line (quoted or not) or a `|`/`>` block. */
function yamlValues(text: string, key: string): string[] {
  const lines = text.split('\n');
  const out: string[] = [];
  const re = new RegExp(`^(\\s*)(?:- )?${key}:\\s*(.*)$`);
  for (let i = 0; i < lines.length; i++) {
    const m = re.exec(lines[i]!);
    if (!m) continue;
    const rest = m[2]!.trim();
    if (/^[|>][-+]?$/.test(rest)) {
      const block: string[] = [];
      const indent = m[1]!.length;
      while (i + 1 < lines.length && (lines[i + 1]!.trim() === '' || lines[i + 1]!.search(/\S/) > indent)) block.push(lines[++i]!.trim());
      out.push(block.join(' ').trim());
    } else if (/^'.*'$/.test(rest)) out.push(rest.slice(1, -1).replace(/''/g, "'"));
    else if (/^".*"$/.test(rest)) out.push(JSON.parse(rest) as string);
    else out.push(rest);
  }
  return out;
}

function dashboardQueries(dashboard: unknown): string[] {
  const out: string[] = [];
  const walk = (node: unknown, key: string | null) => {
    if (typeof node === 'string') {
      if (key === 'expr') out.push(node);
      if (key === 'query' || key === 'definition') {
        const lv = /^label_values\(\s*([^,)]+)\s*,/.exec(node);
        if (lv) out.push(lv[1]!);
      }
      return;
    }
    if (Array.isArray(node)) node.forEach((n) => walk(n, key));
    else if (node && typeof node === 'object') for (const [k, v] of Object.entries(node)) walk(v, k);
  };
  walk(dashboard, null);
  return out;
}

// ------------------------------------------------------------------ what the reconciler exports

interface Exported {
  names: Set<string>;
  /** metric → its label names */
  labels: Map<string, Set<string>>;
  /** metric → label → values in a scrape before anything happened (series the code exports at 0) */
  values: Map<string, Map<string, Set<string>>>;
}

/** Labels whose every value is known: test series must use those. */
const CLOSED: Record<string, readonly string[]> = { phase: PHASES, status: ['queued', 'sending'] };

/** Scrapes a real registry, wired with every source app.ts gives it. */
async function exported(): Promise<Exported> {
  const metrics = createMetrics({ phases: () => ['connected'], leasesHeld: () => 1, heartbeatLastSuccessAt: () => Date.now() });
  metrics.readiness(() => [{ name: 'booted', check: () => true }]);
  workQueueMetrics(metrics.registry, 'accounts');
  connectGovernorMetrics(metrics.registry);
  const names = new Set<string>();
  const labels = new Map<string, Set<string>>();
  for (const m of metrics.registry.getMetricsAsArray() as unknown as Array<{ name: string; labelNames?: string[] }>) {
    labels.set(m.name, new Set(m.labelNames ?? []));
  }
  const values = new Map<string, Map<string, Set<string>>>();
  for (const line of (await metrics.registry.metrics()).split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) {
      const [, name, kind] = type as unknown as [string, string, string];
      names.add(name);
      const own = labels.get(name) ?? new Set<string>();
      if (kind === 'histogram') {
        names.add(`${name}_bucket`).add(`${name}_sum`).add(`${name}_count`);
        labels.set(`${name}_bucket`, new Set([...own, 'le']));
        labels.set(`${name}_sum`, own);
        labels.set(`${name}_count`, own);
      }
      if (kind === 'summary') {
        names.add(`${name}_sum`).add(`${name}_count`);
        labels.set(name, new Set([...own, 'quantile']));
        labels.set(`${name}_sum`, own);
        labels.set(`${name}_count`, own);
      }
      continue;
    }
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} /.exec(line);
    if (!sample) continue;
    const byLabel = values.get(sample[1]!) ?? new Map<string, Set<string>>();
    values.set(sample[1]!, byLabel);
    for (const [, k, v] of sample[2]!.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      const set = byLabel.get(k!) ?? new Set<string>();
      set.add(v!);
      byLabel.set(k!, set);
    }
  }
  return { names, labels, values };
}

/**
 * What in these expressions the reconciler does not export: unknown metrics, unknown label
 * names, and values that are never seen. `exported` values (for rules): a value an alert matches
 * must be a series the code exports before the first event (else `increase` misses that event),
 * or one of a closed set (phases). `closed` (for test series): only closed sets are checked.
 */
function drift(exprs: string[], ex: Exported, valuesFrom: 'exported' | 'closed' = 'exported'): string[] {
  const problems: string[] = [];
  for (const expr of exprs) {
    for (const name of metricNamesIn(expr)) {
      if (!ex.names.has(name) && !FROM_PROMETHEUS.has(name)) problems.push(`${name} is not exported (in: ${expr})`);
    }
    for (const { metric, label, values } of labelValuesIn(expr)) {
      if (TARGET_LABELS.has(label) || FROM_PROMETHEUS.has(metric) || !ex.names.has(metric)) continue;
      if (!ex.labels.get(metric)?.has(label)) {
        problems.push(`${metric} has no label ${label} (in: ${expr})`);
        continue;
      }
      const closed = CLOSED[label];
      const known = closed ? new Set(closed) : valuesFrom === 'exported' ? ex.values.get(metric)?.get(label) : undefined;
      if (!known) {
        if (valuesFrom === 'exported') problems.push(`${metric}{${label}} has no series before the first event: an alert on one value of it misses that first event (in: ${expr})`);
        continue;
      }
      for (const v of values) if (!known.has(v)) problems.push(`${metric}{${label}="${v}"} is never exported (in: ${expr})`);
    }
  }
  return problems;
}

// ------------------------------------------------------------------ the tests

describe('the drift check itself', () => {
  it('finds metric names and ignores functions, keywords, labels, strings and durations', () => {
    expect(
      metricNamesIn('sum by (job, instance) (increase(wafleet_x_total{code="405", reason=~"a|b"}[15m])) * on (job) group_left (version) wafleet_build_info > 1e3 and up offset 5m unless absent(nope_total)').sort(),
    ).toEqual(['nope_total', 'up', 'wafleet_build_info', 'wafleet_x_total']);
    expect(metricNamesIn('histogram_quantile(0.95, sum by (le) (rate(a_bucket{instance=~"$instance"}[$__rate_interval])))')).toEqual(['a_bucket']);
  });

  it('reports a renamed metric and a label value the code never exports', async () => {
    const ex = await exported();
    expect(drift(['sum(wafleet_session{phase="banned"}) > 0'], ex)).toEqual([expect.stringContaining('wafleet_session is not exported')]);
    expect(drift(['wafleet_sessions{phase="suspended"} > 0'], ex)).toEqual([expect.stringContaining('wafleet_sessions{phase="suspended"}')]);
    expect(drift(['wafleet_sessions{state="banned"} > 0'], ex)).toEqual([expect.stringContaining('no label state')]);
    expect(drift(['increase(wafleet_disconnects_total{code="409"}[5m]) > 0'], ex)).toEqual([expect.stringContaining('code="409"')]);
    expect(drift(['increase(wafleet_outbox_failures_total{reason="AccountBanned"}[5m]) > 0'], ex)).toEqual([expect.stringContaining('before the first event')]);
    expect(drift(['wafleet_outbox_failures_total{reason="AccountBanned"}', 'wafleet_sessions{phase="idle"}'], ex, 'closed')).toEqual([expect.stringContaining('phase="idle"')]);
    expect(drift(['wafleet_sessions{phase=~"banned|connected"} > 0 and up{job="wafleet-reconciler"} == 1', 'increase(wafleet_disconnects_total{code="405"}[5m])'], ex)).toEqual([]);
  });
});

describe('alert rules', () => {
  let rules: string;
  let ruleTests: string;
  beforeAll(() => {
    rules = readFileSync(RULES, 'utf8');
    ruleTests = readFileSync(RULE_TESTS, 'utf8');
  });

  it('are valid (promtool check rules)', () => {
    const r = promtool(['check', 'rules', RULES]);
    expect(r.output).toMatch(/SUCCESS/);
    expect(r.status, r.output).toBe(0);
  });

  it('pass their unit tests (promtool test rules)', () => {
    const r = promtool(['test', 'rules', path.basename(RULE_TESTS)]);
    expect(r.status, r.output).toBe(0);
    expect(r.output).toMatch(/SUCCESS/);
  });

  it('each have a test case in which they fire and one in which they do not', () => {
    const alerts = yamlValues(rules, 'alert');
    expect(alerts.length).toBeGreaterThanOrEqual(10);
    expect(yamlValues(rules, 'expr')).toHaveLength(alerts.length);
    // alert_rule_test entries: alertname, then exp_alerts: [] (silent) or a list (firing).
    const cases = [...ruleTests.matchAll(/alertname:\s*(\S+)\s*\n\s*exp_alerts:\s*(\[\])?/g)].map((m) => ({ alert: m[1]!, fires: m[2] === undefined }));
    for (const alert of alerts) {
      expect(cases.some((c) => c.alert === alert && c.fires), `${alert} fires in some test`).toBe(true);
      expect(cases.some((c) => c.alert === alert && !c.fires), `${alert} stays silent in some test`).toBe(true);
    }
    for (const c of cases) expect(alerts, `tested alert ${c.alert} exists`).toContain(c.alert);
  });

  it('cover what the issue asks for', () => {
    const exprs = yamlValues(rules, 'expr').join('\n');
    expect(exprs).toContain('wafleet_heartbeat_age_seconds');
    expect(exprs).toContain('wafleet_ready');
    expect(exprs).toMatch(/wafleet_sessions\{phase=~"[^"]*reconnecting/);
    expect(exprs).toContain('wafleet_sessions{phase="banned"}');
    expect(exprs).toContain('reason="LoggedOut"');
    expect(exprs).toContain('wafleet_outbox_messages');
    expect(exprs).toContain('wafleet_outbox_failures_total');
    expect(exprs).toContain('code="405"');
  });

  it('name only metrics and label values the reconciler exports', async () => {
    const ex = await exported();
    const exprs = yamlValues(rules, 'expr');
    expect(drift(exprs, ex)).toEqual([]);
  });

  it('are tested with series the reconciler exports', async () => {
    const ex = await exported();
    const series = yamlValues(ruleTests, 'series');
    expect(series.length).toBeGreaterThan(10);
    expect(drift(series, ex, 'closed')).toEqual([]);
  });

  it('watch phases that exist, and leave out the intended and human-paced ones', () => {
    const notConnected = /wafleet_sessions\{phase=~"([^"]*)"\}/.exec(yamlValues(rules, 'expr').find((e) => e.includes('reconnecting'))!)![1]!.split('|');
    for (const p of notConnected) expect(PHASES).toContain(p);
    expect(notConnected).not.toContain('connected');
    expect(notConnected).not.toContain('disconnected');
    expect(notConnected).not.toContain('awaitingScan');
  });
});

describe('Grafana dashboard', () => {
  it('is valid JSON with unique panel ids, an instance filter on every query, and only exported metrics', async () => {
    const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as { uid: string; panels: Array<{ id: number; type: string; targets?: Array<{ expr: string }> }> };
    expect(dashboard.uid).toBe('wafleet-fleet');
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const queries = dashboardQueries(dashboard);
    const panelExprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
    expect(panelExprs.length).toBeGreaterThan(20);
    for (const e of panelExprs) expect(e, e).toContain('instance=~"$instance"');
    expect(drift(queries, await exported())).toEqual([]);
  });
});
