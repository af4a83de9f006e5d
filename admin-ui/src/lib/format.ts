// How numbers, money and times read on the dashboard. Every helper is pure (the current time
// is a parameter where it matters) so that tests pin the output.

const LOCALE = 'en-US';

const intFmt = new Intl.NumberFormat(LOCALE, { maximumFractionDigits: 0 });
const compactFmt = new Intl.NumberFormat(LOCALE, { notation: 'compact', maximumFractionDigits: 1 });

/** 1234567 → "1,234,567". */
export function formatInt(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—';
  return intFmt.format(n);
}

/** Token counts in tight places: 950 → "950", 12_345 → "12.3K", 2_500_000 → "2.5M". */
export function formatCompact(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—';
  if (Math.abs(n) < 10_000) return intFmt.format(n);
  return compactFmt.format(n);
}

export const NANO_PER_USD = 1_000_000_000;

const usd2 = new Intl.NumberFormat(LOCALE, {
  style: 'currency',
  currency: 'USD',
  minimumFractionDigits: 2,
  maximumFractionDigits: 2,
});
const usd4 = new Intl.NumberFormat(LOCALE, {
  style: 'currency',
  currency: 'USD',
  minimumFractionDigits: 2,
  maximumFractionDigits: 4,
});
const usdSmall = new Intl.NumberFormat(LOCALE, {
  style: 'currency',
  currency: 'USD',
  minimumFractionDigits: 2,
  maximumSignificantDigits: 3,
});

/**
 * Nano-USD as dollars: "$1,234.57" from a dollar up, "$0.0123" for cents, and three significant
 * digits below a tenth of a cent ("$0.0000123") so that a cheap call never reads as "$0.00".
 */
export function formatUsd(nano: number | null | undefined): string {
  if (nano === null || nano === undefined || !Number.isFinite(nano)) return '—';
  if (nano === 0) return '$0.00';
  const usd = nano / NANO_PER_USD;
  const abs = Math.abs(usd);
  if (abs >= 1) return usd2.format(usd);
  if (abs >= 0.001) return usd4.format(usd);
  return usdSmall.format(usd);
}

/** A USD amount (already in dollars), e.g. a price per million tokens: "$2.50". */
export function formatDollars(usd: number | null | undefined): string {
  if (usd === null || usd === undefined || !Number.isFinite(usd)) return '—';
  return usd4.format(usd);
}

/** Nano-USD → USD, for form fields (no float noise: 1.1 stays "1.1"). */
export function nanoToUsd(nano: number): number {
  return Math.round(nano) / NANO_PER_USD;
}

/** 0.1234 → "12.3%". */
export function formatPercent(share: number | null | undefined, digits = 1): string {
  if (share === null || share === undefined || !Number.isFinite(share)) return '—';
  return `${(share * 100).toFixed(share === 0 ? 0 : digits)}%`;
}

/** Milliseconds as "850 ms", "1.2 s", "2 min 5 s". */
export function formatDuration(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  const min = Math.floor(ms / 60_000);
  const s = Math.round((ms % 60_000) / 1000);
  return s ? `${min} min ${s} s` : `${min} min`;
}

const rtf = new Intl.RelativeTimeFormat(LOCALE, { numeric: 'auto', style: 'short' });

/** `ts` relative to `now`: "just now", "3 min. ago", "in 2 hr.", "yesterday", "5 days ago". */
export function formatRelative(ts: number | null | undefined, now: number): string {
  if (ts === null || ts === undefined || !Number.isFinite(ts)) return 'never';
  const diff = ts - now;
  const abs = Math.abs(diff);
  if (abs < 45_000) return 'just now';
  const units: [Intl.RelativeTimeFormatUnit, number][] = [
    ['minute', 60_000],
    ['hour', 3_600_000],
    ['day', 86_400_000],
    ['month', 30 * 86_400_000],
    ['year', 365 * 86_400_000],
  ];
  let chosen: [Intl.RelativeTimeFormatUnit, number] = units[0]!;
  for (const u of units) {
    if (abs >= u[1] * 0.95) chosen = u;
  }
  const [unit, size] = chosen;
  return rtf.format(Math.round(diff / size), unit);
}

const dtfCache = new Map<string, Intl.DateTimeFormat>();
function dtf(timeZone: string, opts: Intl.DateTimeFormatOptions, key: string): Intl.DateTimeFormat {
  const k = `${timeZone}|${key}`;
  let f = dtfCache.get(k);
  if (!f) {
    try {
      f = new Intl.DateTimeFormat(LOCALE, { ...opts, timeZone });
    } catch {
      f = new Intl.DateTimeFormat(LOCALE, { ...opts, timeZone: 'UTC' });
    }
    dtfCache.set(k, f);
  }
  return f;
}

/** Unix ms as "2026-11-28 14:05:09" in `timeZone` (the gateway's `limits.timezone`). */
export function formatDateTime(ts: number | null | undefined, timeZone: string): string {
  if (ts === null || ts === undefined || !Number.isFinite(ts)) return '—';
  const parts = dtf(
    timeZone,
    {
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
      hourCycle: 'h23',
    },
    'dt',
  ).formatToParts(new Date(ts));
  const get = (t: string) => parts.find((p) => p.type === t)?.value ?? '';
  return `${get('year')}-${get('month')}-${get('day')} ${get('hour')}:${get('minute')}:${get('second')}`;
}

/** Unix ms as "14:05" today or "Nov 28, 14:05" otherwise, in `timeZone`. */
export function formatShortTime(ts: number, timeZone: string, now: number): string {
  const day = dtf(timeZone, { year: 'numeric', month: '2-digit', day: '2-digit' }, 'd');
  const time = dtf(timeZone, { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }, 't');
  const date = new Date(ts);
  if (day.format(date) === day.format(new Date(now))) return time.format(date);
  return `${dtf(timeZone, { month: 'short', day: 'numeric' }, 'md').format(date)}, ${time.format(date)}`;
}

/** "2026-11-28" → "Nov 28" (the day as the API names it, no time zone shift). */
export function formatDayLabel(day: string): string {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(day);
  if (!m) return day;
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  return `${months[Number(m[2]) - 1] ?? m[2]} ${Number(m[3])}`;
}

/** The days from `since` to `until`, both `YYYY-MM-DD`, inclusive. */
export function daysBetween(since: string, until: string): string[] {
  const out: string[] = [];
  const start = Date.parse(`${since}T00:00:00Z`);
  const end = Date.parse(`${until}T00:00:00Z`);
  if (!Number.isFinite(start) || !Number.isFinite(end)) return out;
  for (let t = start; t <= end && out.length < 400; t += 86_400_000) {
    out.push(new Date(t).toISOString().slice(0, 10));
  }
  return out;
}

/** `used / limit` clamped to 0..1 (0 when there is no limit). */
export function ratio(used: number, limit: number | null | undefined): number {
  if (!limit || limit <= 0) return 0;
  return Math.max(0, Math.min(1, used / limit));
}

/** A person-friendly name for a user: name, else email, else id. */
export function displayName(u: { id: string; name: string | null; email: string | null }): string {
  return u.name || u.email || u.id;
}

/** Today's date as `YYYY-MM-DD` in `timeZone`. */
export function dayIn(ts: number, timeZone: string): string {
  const parts = dtf(timeZone, { year: 'numeric', month: '2-digit', day: '2-digit' }, 'iso').formatToParts(
    new Date(ts),
  );
  const get = (t: string) => parts.find((p) => p.type === t)?.value ?? '';
  return `${get('year')}-${get('month')}-${get('day')}`;
}
