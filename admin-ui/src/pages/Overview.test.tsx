import { screen, within } from '@testing-library/react';
import { describe, expect, it } from 'vitest';
import { seriesRows, OTHER } from '../components/charts';
import { configView, me, mockApi, stats, totals, user, usersPage } from '../test/mockApi';
import { renderApp } from '../test/render';

const emptySeries = { days: 30, by: 'model', since: '2026-10-30', today: '2026-11-28', points: [], timezone: 'Europe/Paris' };

describe('the overview', () => {
  it('shows today’s and this month’s figures, formatted, with the time zone', async () => {
    mockApi({
      'GET /api/admin/me': () => ({ body: me }),
      'GET /api/admin/stats': () => ({ body: stats() }),
      'GET /api/admin/config': () => ({ body: configView }),
      'GET /api/admin/users': () => ({ body: usersPage([user('alice', { name: 'Alice' })]) }),
      'GET /api/admin/usage/series': () => ({ body: emptySeries }),
    });
    renderApp('/');
    expect(await screen.findByTestId('calls-today', {}, { timeout: 10_000 })).toHaveTextContent('1,234');
    expect(screen.getByTestId('calls-month')).toHaveTextContent('45,678');
    expect(screen.getByTestId('tokens-today')).toHaveTextContent('5,678,901');
    expect(screen.getByTestId('cost-today')).toHaveTextContent('$12.35');
    expect(screen.getByTestId('cost-month')).toHaveTextContent('$456.79');
    expect(screen.getByTestId('users-total')).toHaveTextContent('3');
    expect(screen.getByTestId('users-active-today')).toHaveTextContent('2');
    expect(screen.getByTestId('users-blocked')).toHaveTextContent('1');
    expect(screen.getByTestId('estimated-today')).toHaveTextContent('1.0%');
    expect(screen.getByTestId('timezone')).toHaveTextContent('Europe/Paris');
    // No calls in the period: an empty state instead of empty charts.
    expect(await screen.findByText('No calls in the last 30 days')).toBeInTheDocument();
    const top = screen.getByRole('region', { name: 'Top users this month' });
    expect(await within(top).findByText('Alice')).toBeInTheDocument();
    expect(within(top).getByRole('link', { name: /Alice/ })).toHaveAttribute('href', '/users/alice');
  });

  it('shows skeletons while loading and an error banner when the stats fail', async () => {
    mockApi({
      'GET /api/admin/me': () => ({ body: me }),
      'GET /api/admin/stats': () => ({ status: 500, body: { error: { code: 'internal_error', message: 'the admin request failed' } } }),
      'GET /api/admin/users': () => ({ body: usersPage([]) }),
      'GET /api/admin/usage/series': () => ({ body: emptySeries }),
    });
    renderApp('/');
    const alert = await screen.findByText('Could not load the statistics', {}, { timeout: 10_000 });
    expect(alert.closest('[role=alert]')).toHaveTextContent('the admin request failed');
    expect(screen.getByRole('button', { name: /Retry/ })).toBeInTheDocument();
    expect(await screen.findByText('No usage yet')).toBeInTheDocument();
  });
});

describe('chart rows', () => {
  it('fills missing days with zeros and keeps the biggest models', () => {
    const p = (day: string, key: string, tokens: number) => ({ day, key, provider: 'openai', totals: totals({ total_tokens: tokens, cost_nano_usd: tokens }) });
    const points = [
      p('2026-11-26', 'a', 10),
      p('2026-11-28', 'b', 100),
      ...['c', 'd', 'e', 'f', 'g'].map((k, i) => p('2026-11-28', k, i + 1)),
    ];
    const { rows, keys } = seriesRows(points, '2026-11-26', '2026-11-28', 'tokens');
    expect(rows.map((r) => r.day)).toEqual(['2026-11-26', '2026-11-27', '2026-11-28']);
    expect(keys).toEqual(['b', 'a', 'g', 'f', 'e', OTHER]);
    expect(rows[1]).toMatchObject({ a: 0, b: 0 });
    // c (1) and d (2) are the smallest: summed as "other".
    expect(rows[2]).toMatchObject({ b: 100, g: 5, [OTHER]: 1 + 2 });
  });
});
