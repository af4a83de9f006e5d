import { screen, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it } from 'vitest';
import type { CallRow, UserUsage } from '../api/types';
import { configView, me, mockApi, stats, totals, user } from '../test/mockApi';
import { renderApp } from '../test/render';

const now = Date.now();

function call(id: number, partial: Partial<CallRow> = {}): CallRow {
  return {
    id,
    request_id: `tg-${id}`,
    ts: now - id * 60_000,
    user_id: 'alice',
    provider: 'openai',
    model: 'gpt-4o-mini',
    endpoint: 'chat.completions',
    streamed: false,
    status: 200,
    input_tokens: 10,
    cached_input_tokens: 0,
    output_tokens: 20,
    reasoning_tokens: 0,
    total_tokens: 30,
    cost_nano_usd: 13_500,
    usage_source: 'reported',
    latency_ms: 1234,
    ttfb_ms: 100,
    outcome: 'complete',
    ...partial,
  };
}

function usage(calls: CallRow[], next: number | null): UserUsage {
  const d = new Date(now);
  const window = (w: string) => ({
    window: w,
    start: w === 'month' ? Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1) : Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()),
    reset_at: now + 3_600_000,
    used_tokens: 1200,
    reserved_tokens: 0,
    token_limit: 100_000,
    remaining_tokens: 98_800,
    used_cost_nano_usd: 3_000_000,
    cost_limit_nano_usd: null,
    remaining_cost_nano_usd: null,
  });
  return {
    user: user('alice', { name: 'Alice', blocked: true, blocked_reason: 'abuse' }),
    days: 30,
    daily: [{ day: '2026-11-28', totals: totals({ calls: 2, input_tokens: 20, output_tokens: 40, total_tokens: 60 }) }],
    models: [{ provider: 'openai', model: 'gpt-4o-mini', totals: totals({ calls: 2, total_tokens: 60, cost_nano_usd: 27_000 }) }],
    calls,
    next_cursor: next,
    quota: { day: window('day'), month: window('month'), in_flight: 1 },
    timezone: 'UTC',
  };
}

describe('a user’s page', () => {
  it('shows quota, models, recent calls with their usage source, and pages older calls', async () => {
    const api = mockApi({
      'GET /api/admin/me': () => ({ body: me }),
      'GET /api/admin/stats': () => ({ body: stats({ timezone: 'UTC' }) }),
      'GET /api/admin/config': () => ({ body: configView }),
      'GET /api/admin/audit': () => ({ body: { entries: [], next_cursor: null } }),
      'GET /api/admin/user/alice/usage': (c) =>
        c.query.get('cursor') === '2'
          ? { body: usage([call(3, { status: 502, usage_source: 'invalid', outcome: 'upstream_error', cost_nano_usd: null })], null) }
          : { body: usage([call(1), call(2, { usage_source: 'estimated' })], 2) },
    });
    const ue = userEvent.setup();
    renderApp('/users/alice');
    // The page's chunk (with the chart library) loads first: allow for it.
    expect(await screen.findByText('Blocked: every call of this user is refused with 403.', {}, { timeout: 10_000 })).toBeInTheDocument();
    expect(screen.getByRole('heading', { level: 1 })).toHaveTextContent('alice');
    expect(screen.getByText('Reason: abuse')).toBeInTheDocument();
    const quota = screen.getByTestId('quota-day');
    expect(within(quota).getByText('1,200')).toBeInTheDocument();
    expect(within(quota).getByText(/Resets/)).toHaveTextContent('UTC');
    const calls = screen.getByRole('region', { name: 'Recent calls' });
    expect(within(calls).getAllByRole('row')).toHaveLength(3);
    expect(within(calls).getByText('estimated')).toBeInTheDocument();
    expect(within(calls).getAllByText('1.23 s')).toHaveLength(2);
    expect(await screen.findByText('No admin action about this user yet')).toBeInTheDocument();
    expect(screen.getByRole('link', { name: /CSV this month/ }).getAttribute('href')).toMatch(/^\/api\/admin\/usage\.csv\?from=\d{4}-\d{2}-01&to=\d{4}-\d{2}-\d{2}&user=alice$/);
    await ue.click(within(calls).getByRole('button', { name: 'Older calls' }));
    expect(await within(calls).findByText('502')).toBeInTheDocument();
    expect(within(calls).getAllByRole('row')).toHaveLength(4);
    // An impossible provider report: its own badge, and the tokens said to be estimated.
    expect(within(calls).getByText('invalid')).toHaveAttribute('title', expect.stringMatching(/impossible usage.*estimated instead/));
    expect(within(calls).queryByRole('button', { name: 'Older calls' })).not.toBeInTheDocument();
    const first = api.to('/api/admin/user/alice/usage')[0]!;
    expect(Object.fromEntries(first.query)).toEqual({ days: '30', limit: '25' });
  });

  it('says when the user does not exist', async () => {
    mockApi({
      'GET /api/admin/me': () => ({ body: me }),
      'GET /api/admin/stats': () => ({ body: stats() }),
      'GET /api/admin/config': () => ({ body: configView }),
      'GET /api/admin/user/:id/usage': () => ({ status: 404, body: { error: { code: 'not_found', message: 'no user "ghost"' } } }),
    });
    renderApp('/users/ghost');
    expect(await screen.findByText('No such user', {}, { timeout: 10_000 })).toBeInTheDocument();
  });
});
