import { describe, expect, it } from 'vitest';
import {
  dayIn,
  daysBetween,
  displayName,
  formatCompact,
  formatDateTime,
  formatDayLabel,
  formatDuration,
  formatInt,
  formatPercent,
  formatRelative,
  formatUsd,
  nanoToUsd,
  ratio,
} from './format';

describe('numbers', () => {
  it('groups thousands', () => {
    expect(formatInt(0)).toBe('0');
    expect(formatInt(1234567)).toBe('1,234,567');
    expect(formatInt(null)).toBe('—');
    expect(formatInt(Number.NaN)).toBe('—');
  });

  it('compacts large token counts only', () => {
    expect(formatCompact(950)).toBe('950');
    expect(formatCompact(9_999)).toBe('9,999');
    expect(formatCompact(12_345)).toBe('12.3K');
    expect(formatCompact(2_500_000)).toBe('2.5M');
  });

  it('shows shares as percentages', () => {
    expect(formatPercent(0)).toBe('0%');
    expect(formatPercent(0.1234)).toBe('12.3%');
    expect(formatPercent(1)).toBe('100.0%');
  });

  it('reads durations', () => {
    expect(formatDuration(850)).toBe('850 ms');
    expect(formatDuration(1234)).toBe('1.23 s');
    expect(formatDuration(12_345)).toBe('12.3 s');
    expect(formatDuration(125_000)).toBe('2 min 5 s');
  });

  it('bounds ratios', () => {
    expect(ratio(50, 100)).toBe(0.5);
    expect(ratio(150, 100)).toBe(1);
    expect(ratio(5, null)).toBe(0);
    expect(ratio(5, 0)).toBe(0);
  });
});

describe('money (nano-USD)', () => {
  it('formats dollars with cents', () => {
    expect(formatUsd(0)).toBe('$0.00');
    expect(formatUsd(1_234_567_890_000)).toBe('$1,234.57');
    expect(formatUsd(1_000_000_000)).toBe('$1.00');
  });

  it('keeps small amounts readable instead of $0.00', () => {
    expect(formatUsd(12_345_678)).toBe('$0.0123');
    expect(formatUsd(3_000_000)).toBe('$0.003');
    expect(formatUsd(12_300)).toBe('$0.0000123');
    expect(formatUsd(1)).toBe('$0.000000001');
  });

  it('converts to USD without float noise', () => {
    expect(nanoToUsd(2_500_000_000)).toBe(2.5);
    expect(nanoToUsd(1)).toBe(1e-9);
    expect(formatUsd(null)).toBe('—');
  });
});

describe('times', () => {
  const now = Date.UTC(2026, 10, 28, 12, 0, 0);

  it('says how long ago', () => {
    expect(formatRelative(now - 10_000, now)).toBe('just now');
    expect(formatRelative(now - 3 * 60_000, now)).toBe('3 min. ago');
    expect(formatRelative(now - 2 * 3_600_000, now)).toBe('2 hr. ago');
    expect(formatRelative(now - 86_400_000, now)).toBe('yesterday');
    expect(formatRelative(now - 5 * 86_400_000, now)).toBe('5 days ago');
    expect(formatRelative(now + 2 * 3_600_000, now)).toBe('in 2 hr.');
    expect(formatRelative(null, now)).toBe('never');
  });

  it('shows absolute times in the gateway time zone', () => {
    expect(formatDateTime(now, 'UTC')).toBe('2026-11-28 12:00:00');
    expect(formatDateTime(now, 'Europe/Paris')).toBe('2026-11-28 13:00:00');
    expect(formatDateTime(now, 'America/Los_Angeles')).toBe('2026-11-28 04:00:00');
    expect(formatDateTime(now, 'Not/AZone')).toBe('2026-11-28 12:00:00');
  });

  it('knows the day in a time zone', () => {
    const late = Date.UTC(2026, 10, 28, 23, 30);
    expect(dayIn(late, 'UTC')).toBe('2026-11-28');
    expect(dayIn(late, 'Asia/Tokyo')).toBe('2026-11-29');
  });

  it('lists and labels days', () => {
    expect(daysBetween('2026-02-27', '2026-03-02')).toEqual(['2026-02-27', '2026-02-28', '2026-03-01', '2026-03-02']);
    expect(daysBetween('2026-03-02', '2026-03-01')).toEqual([]);
    expect(formatDayLabel('2026-11-05')).toBe('Nov 5');
  });
});

it('names users by name, then email, then id', () => {
  expect(displayName({ id: 'u1', name: 'Ada', email: 'a@x' })).toBe('Ada');
  expect(displayName({ id: 'u1', name: null, email: 'a@x' })).toBe('a@x');
  expect(displayName({ id: 'u1', name: null, email: null })).toBe('u1');
});
