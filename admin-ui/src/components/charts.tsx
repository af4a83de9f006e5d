// Per-day charts (Recharts): stacked bars by model, or by input/output for one user.

import {
  Bar,
  BarChart,
  CartesianGrid,
  Legend,
  ResponsiveContainer,
  Tooltip,
  XAxis,
  YAxis,
} from 'recharts';
import type { DayPoint, SeriesPoint, UsageTotals } from '../api/types';
import { daysBetween, formatCompact, formatDayLabel, formatInt, formatUsd, NANO_PER_USD } from '../lib/format';

export type Metric = 'tokens' | 'cost' | 'calls';

const PALETTE = ['#2f5bea', '#16a37f', '#e8851a', '#a34fd8', '#d6435b', '#2aa3c7', '#8a9a1b', '#7a6350'];
export const OTHER = 'Other models';
const MAX_SERIES = 6;

export function colorFor(index: number): string {
  return PALETTE[index % PALETTE.length]!;
}

function metricOf(t: UsageTotals, metric: Metric): number {
  if (metric === 'cost') return t.cost_nano_usd;
  if (metric === 'calls') return t.calls;
  return t.total_tokens;
}

export function formatMetric(v: number, metric: Metric): string {
  if (metric === 'cost') return formatUsd(v);
  return formatInt(v);
}

export interface ChartRows {
  rows: Record<string, number | string>[];
  keys: string[];
}

/**
 * Series points → one row per day (every day from `since` to `today`, zeros included) with one
 * column per model: the models with the most of `metric` first, the rest summed as "Other".
 */
export function seriesRows(points: SeriesPoint[], since: string, today: string, metric: Metric): ChartRows {
  const label = (p: SeriesPoint) => p.key || `(no model) ${p.provider}`;
  const totals = new Map<string, number>();
  for (const p of points) totals.set(label(p), (totals.get(label(p)) ?? 0) + metricOf(p.totals, metric));
  const ranked = [...totals.entries()].filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1]).map(([k]) => k);
  const shown = ranked.length > MAX_SERIES ? ranked.slice(0, MAX_SERIES - 1) : ranked;
  const keys = ranked.length > shown.length ? [...shown, OTHER] : shown;
  const byDay = new Map<string, Record<string, number | string>>();
  for (const day of daysBetween(since, today)) {
    const row: Record<string, number | string> = { day };
    for (const k of keys) row[k] = 0;
    byDay.set(day, row);
  }
  for (const p of points) {
    const row = byDay.get(p.day);
    if (!row) continue;
    const k = shown.includes(label(p)) ? label(p) : OTHER;
    if (!(k in row)) continue;
    row[k] = (row[k] as number) + metricOf(p.totals, metric);
  }
  return { rows: [...byDay.values()], keys };
}

/** One user's days → rows of input and output tokens, or cost. */
export function dailyRows(daily: DayPoint[], metric: Metric): ChartRows {
  if (metric === 'tokens') {
    return {
      keys: ['Input', 'Output'],
      rows: daily.map((d) => ({ day: d.day, Input: d.totals.input_tokens, Output: d.totals.output_tokens })),
    };
  }
  const key = metric === 'cost' ? 'Cost' : 'Calls';
  return { keys: [key], rows: daily.map((d) => ({ day: d.day, [key]: metricOf(d.totals, metric) })) };
}

const sig2 = new Intl.NumberFormat('en-US', { maximumSignificantDigits: 2 });

export function axisTick(v: number, metric: Metric): string {
  if (metric === 'cost') {
    const usd = v / NANO_PER_USD;
    if (usd === 0) return '$0';
    if (usd >= 1000) return `$${formatCompact(usd)}`;
    if (usd >= 1) return `$${Number(usd.toFixed(2))}`;
    // Two significant digits: 0.00015 → "$0.00015".
    return `$${sig2.format(usd)}`;
  }
  return formatCompact(v);
}

/** One colour per key, the same in every chart that shows these keys. */
export function colorMap(keys: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  for (const k of keys) out[k] = k === OTHER ? '#9aa3b2' : colorFor(i++);
  return out;
}

export function StackedDays({
  data,
  metric,
  label,
  height = 260,
  colors,
}: {
  data: ChartRows;
  metric: Metric;
  /** What the chart shows, for screen readers. */
  label: string;
  height?: number;
  /** Colour per key (so that a model keeps its colour across charts). */
  colors?: Record<string, string>;
}) {
  const dense = data.rows.length > 31;
  const palette = { ...colorMap(data.keys), ...colors };
  return (
    <div className="chart" role="img" aria-label={label}>
      <ResponsiveContainer width="100%" height={height} minWidth={0}>
        <BarChart data={data.rows} margin={{ top: 8, right: 8, bottom: 0, left: 0 }} barCategoryGap={dense ? 1 : '20%'}>
          <CartesianGrid strokeDasharray="3 3" vertical={false} stroke="var(--grid)" />
          <XAxis
            dataKey="day"
            tickFormatter={formatDayLabel}
            tick={{ fontSize: 11, fill: 'var(--muted)' }}
            tickLine={false}
            axisLine={{ stroke: 'var(--border)' }}
            minTickGap={16}
          />
          <YAxis
            tickFormatter={(v: number) => axisTick(v, metric)}
            tick={{ fontSize: 11, fill: 'var(--muted)' }}
            tickLine={false}
            axisLine={false}
            width={metric === 'cost' ? 72 : 52}
            allowDecimals={metric === 'cost'}
          />
          <Tooltip
            cursor={{ fill: 'var(--hover)' }}
            contentStyle={{
              background: 'var(--surface)',
              border: '1px solid var(--border)',
              borderRadius: 8,
              fontSize: 12,
              color: 'var(--text)',
            }}
            labelFormatter={(d) => formatDayLabel(String(d))}
            formatter={(v) => formatMetric(Number(v), metric)}
          />
          {data.keys.length > 1 && <Legend wrapperStyle={{ fontSize: 12 }} iconSize={10} />}
          {data.keys.map((k, i) => (
            <Bar key={k} dataKey={k} stackId="a" fill={palette[k] ?? colorFor(i)} isAnimationActive={false} maxBarSize={36} />
          ))}
        </BarChart>
      </ResponsiveContainer>
    </div>
  );
}
