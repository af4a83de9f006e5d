import { screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it } from 'vitest';
import type { CallRow, ControlsChange, LimitSources, LimitsRequest, UserOverrides, UserUsage, UserView } from '../api/types';
import { configView, defaultLimits, fromLimits, me, mockApi, noOverrides, plansView, proPlan, stats, totals, user } from '../test/mockApi';
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

function usage(calls: CallRow[], next: number | null, who: UserView = user('alice', { name: 'Alice', blocked: true, blocked_reason: 'abuse' })): UserUsage {
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
    user: who,
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

/** The rows of the limits table: label → [value shown, source shown, data-source]. */
function limitRows() {
  const table = screen.getByRole('table', { name: /^Limits in force for/ });
  return Object.fromEntries(
    within(table)
      .getAllByRole('row')
      .slice(1)
      .map((r) => {
        const [value, from] = within(r).getAllByRole('cell');
        return [
          within(r).getByRole('rowheader').textContent,
          [value!.querySelector('.limit-value')!.textContent, from!.textContent, r.getAttribute('data-source')],
        ];
      }),
  );
}

describe('a user’s plan and where their limits come from', () => {
  /** alice on pro, her own 5,000 tokens a day; the gateway applies a PUT as the real one does. */
  function setupPro(opts: { rereads?: boolean } = {}) {
    let overrides: UserOverrides = { ...noOverrides, daily_tokens: 5000 };
    let reads = 0;
    const current = (): UserView => {
      const sources: LimitSources = { ...proPlan.limit_sources };
      const limits = { ...proPlan.limits };
      if (overrides.daily_tokens !== null) [limits.daily_tokens, sources.daily_tokens] = [overrides.daily_tokens, 'override'];
      if (overrides.monthly_tokens !== null) [limits.monthly_tokens, sources.monthly_tokens] = [overrides.monthly_tokens, 'override'];
      return user('alice', { plan: 'pro', overrides, limits, limit_sources: sources });
    };
    const api = mockApi({
      'GET /api/admin/me': () => ({ body: me }),
      'GET /api/admin/stats': () => ({ body: stats({ timezone: 'UTC' }) }),
      'GET /api/admin/config': () => ({ body: configView }),
      'GET /api/admin/plans': () => ({ body: plansView() }),
      'GET /api/admin/audit': () => ({ body: { entries: [], next_cursor: null } }),
      'GET /api/admin/user/alice/usage': () => {
        reads++;
        // Without rereads, the page is never read again after the first time: what changes on it
        // comes from the answer to the change.
        if (reads > 1 && opts.rereads === false) return new Promise<never>(() => {});
        return { body: usage([call(1)], null, current()) };
      },
      'PUT /api/admin/user/alice/limits': (c) => {
        const before = current();
        const body = c.body as LimitsRequest;
        overrides = {
          ...overrides,
          ...(body.daily_tokens !== undefined ? { daily_tokens: body.daily_tokens } : {}),
          ...(body.monthly_tokens !== undefined ? { monthly_tokens: body.monthly_tokens } : {}),
        };
        const after = current();
        const change: ControlsChange = {
          user: 'alice',
          before: { blocked: false, blocked_reason: null, overrides: before.overrides },
          after: { blocked: false, blocked_reason: null, overrides: after.overrides },
          limits: after.limits,
          limit_sources: after.limit_sources,
        };
        return { body: change };
      },
    });
    return api;
  }

  it('shows the plan beside the name, and each limit with its value and source', async () => {
    setupPro();
    renderApp('/users/alice');
    await screen.findByRole('table', { name: /^Limits in force for alice/ }, { timeout: 10_000 });
    const heading = screen.getByRole('heading', { level: 1 });
    expect(within(heading).getByTestId('user-plan')).toHaveTextContent(/^plan pro$/);
    expect(limitRows()).toEqual({
      'Tokens per day': ['5,000', 'override', 'override'],
      'Tokens per month': ['5,000,000', 'plan pro', 'plan'],
      'Cost per day': ['$2.50', 'plan pro', 'plan'],
      'Cost per month': ['no budget', '[limits]', 'limits'],
      'Requests per minute': ['60', '[limits]', 'limits'],
      'Calls at once': ['no cap', '[limits]', 'limits'],
    });
    expect(within(screen.getByRole('row', { name: /^Calls at once/ })).getByText('1 in flight now')).toBeInTheDocument();
    expect(screen.getByRole('region', { name: 'Limits and quota' })).toHaveTextContent('else their plan ([plans.pro]), else [limits]');
  });

  it('says “no plan” for a user on none, their limits from [limits]', async () => {
    mockApi({
      'GET /api/admin/me': () => ({ body: me }),
      'GET /api/admin/stats': () => ({ body: stats({ timezone: 'UTC' }) }),
      'GET /api/admin/config': () => ({ body: configView }),
      'GET /api/admin/audit': () => ({ body: { entries: [], next_cursor: null } }),
      'GET /api/admin/user/bob/usage': () => ({ body: usage([], null, user('bob', { limits: defaultLimits, limit_sources: fromLimits })) }),
    });
    renderApp('/users/bob');
    await screen.findByRole('table', { name: /^Limits in force for bob/ }, { timeout: 10_000 });
    const heading = screen.getByRole('heading', { level: 1 });
    expect(within(heading).getByTestId('user-plan')).toHaveTextContent(/^no plan$/);
    expect(Object.values(limitRows()).map(([, from]) => from)).toEqual(Array(6).fill('[limits]'));
    expect(limitRows()['Tokens per day']![0]).toBe('100,000');
  });

  it('an override set in the editor shows as the source once saved; cleared, the plan’s comes back', async () => {
    const api = setupPro();
    const ue = userEvent.setup();
    renderApp('/users/alice');
    await screen.findByRole('table', { name: /^Limits in force for alice/ }, { timeout: 10_000 });
    await ue.click(screen.getByRole('button', { name: 'Edit limits' }));
    const dialog = await screen.findByRole('dialog', { name: 'Limits for alice' });
    // Without an override, tokens per month would be the plan's.
    await waitFor(() => expect(within(dialog).getByLabelText('Tokens per month')).toHaveAttribute('placeholder', '5,000,000'));
    await ue.type(within(dialog).getByLabelText('Tokens per month'), '750000');
    await ue.click(within(dialog).getByRole('button', { name: 'Save limits' }));
    await waitFor(() => expect(screen.queryByRole('dialog')).not.toBeInTheDocument());
    expect(api.to('/api/admin/user/alice/limits', 'PUT')[0]!.body).toEqual({ monthly_tokens: 750_000 });
    await waitFor(() => expect(limitRows()['Tokens per month']).toEqual(['750,000', 'override', 'override']));

    await ue.click(screen.getByRole('button', { name: 'Edit limits' }));
    const again = await screen.findByRole('dialog', { name: 'Limits for alice' });
    await ue.click(within(again).getByRole('button', { name: 'Clear all' }));
    await ue.click(within(again).getByRole('button', { name: 'Save limits' }));
    await waitFor(() => expect(screen.queryByRole('dialog')).not.toBeInTheDocument());
    expect(api.to('/api/admin/user/alice/limits', 'PUT')[1]!.body).toEqual({ daily_tokens: null, monthly_tokens: null });
    await waitFor(() =>
      expect(limitRows()).toMatchObject({
        'Tokens per day': ['500,000', 'plan pro', 'plan'],
        'Tokens per month': ['5,000,000', 'plan pro', 'plan'],
      }),
    );
  });

  it('shows the saved limit and its source from the answer, before the page is read again', async () => {
    const api = setupPro({ rereads: false });
    const ue = userEvent.setup();
    renderApp('/users/alice');
    await screen.findByRole('table', { name: /^Limits in force for alice/ }, { timeout: 10_000 });
    await ue.click(screen.getByRole('button', { name: 'Edit limits' }));
    const dialog = await screen.findByRole('dialog', { name: 'Limits for alice' });
    await ue.click(within(dialog).getByRole('button', { name: 'Use the default for tokens per day' }));
    await ue.click(within(dialog).getByRole('button', { name: 'Save limits' }));
    await waitFor(() => expect(limitRows()['Tokens per day']).toEqual(['500,000', 'plan pro', 'plan']));
    // The reread was asked for, and has not answered.
    expect(api.to('/api/admin/user/alice/usage').length).toBeGreaterThan(1);
  });
});
