import { screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it } from 'vitest';
import { keys } from '../api/hooks';
import type { AlertRow, AlertsPage } from '../api/types';
import { formatDateTime } from '../lib/format';
import { configView, me, mockApi, stats } from '../test/mockApi';
import { renderApp } from '../test/render';

const NOW = Date.now();

function alert(id: number, partial: Partial<AlertRow> = {}): AlertRow {
  return {
    id,
    ts: NOW - id * 60_000,
    rule: 'user_limit',
    kind: 'user_limit',
    subject: 'alice',
    period: '2026-11-28',
    level: 'day tokens 80%',
    message: 'User alice passed 80% of their daily token limit: 84 of 100 tokens.',
    details: { window: 'day', measure: 'tokens', used_tokens: 84, limit_tokens: 100, percent: 80 },
    delivery: 'none',
    attempts: 0,
    delivered_at: null,
    ...partial,
  };
}

function page(alerts: AlertRow[], next_cursor: number | null = null, last_24h = alerts.length): AlertsPage {
  return { alerts, next_cursor, last_24h };
}

function setup(alerts: (cursor: string | null, limit: string | null) => AlertsPage, config = configView) {
  return mockApi({
    'GET /api/admin/me': () => ({ body: me }),
    'GET /api/admin/stats': () => ({ body: stats({ timezone: 'Asia/Tokyo' }) }),
    'GET /api/admin/config': () => ({ body: config }),
    'GET /api/admin/users': () => ({ body: { users: [], total: 0, limit: 25, offset: 0, today: '2026-11-28', timezone: 'Asia/Tokyo' } }),
    'GET /api/admin/alerts': (c) => ({ body: alerts(c.query.get('cursor'), c.query.get('limit')) }),
  });
}

function row(id: number): HTMLElement {
  return document.querySelector<HTMLElement>(`tr[data-alert="${id}"]`)!;
}

describe('the alerts page', () => {
  it('lists the alerts with their delivery, a user subject linking to the user, times in the gateway’s zone', async () => {
    const deliveredAt = NOW - 30_000;
    setup(() =>
      page([
        alert(1, { delivery: 'delivered', attempts: 1, delivered_at: deliveredAt }),
        alert(2, { delivery: 'pending' }),
        alert(3, {
          rule: 'errors',
          kind: 'upstream_errors',
          subject: 'gw-1',
          period: '2026-11-28T09:14',
          level: '25%',
          message: 'Upstream errors on gw-1: 25% of 40 calls over 5 minutes.',
          delivery: 'failed',
          attempts: 12,
        }),
        alert(4, { rule: 'daily spend', kind: 'spend', subject: 'gateway', level: 'day $50.00', message: 'Spend today passed $50.00: $51.20 over every user.' }),
      ]),
    );
    renderApp('/alerts');
    expect(await screen.findByRole('heading', { name: 'Alerts' })).toBeInTheDocument();
    await waitFor(() => expect(row(1)).toBeTruthy());

    const delivered = within(row(1));
    expect(delivered.getByText('delivered')).toHaveClass('badge-ok');
    expect(delivered.getByText('1 attempt')).toBeInTheDocument();
    expect(delivered.getByText(formatDateTime(deliveredAt, 'Asia/Tokyo'))).toBeInTheDocument();
    expect(delivered.getByRole('link', { name: 'alice' })).toHaveAttribute('href', '/users/alice');
    expect(delivered.getByText('day tokens 80%')).toBeInTheDocument();
    expect(delivered.getByText('2026-11-28')).toBeInTheDocument();
    expect(delivered.getByText('user limit')).toBeInTheDocument();
    expect(delivered.getByText(/84 of 100 tokens/)).toBeInTheDocument();
    // When it fired, in the gateway's time zone (Asia/Tokyo), not the browser's.
    expect(delivered.getByText(formatDateTime(NOW - 60_000, 'Asia/Tokyo'))).toBeInTheDocument();

    const pending = within(row(2));
    expect(pending.getByText('pending')).toHaveClass('badge-info');
    // Attempts are counted once the deliveries end: none shown while pending.
    expect(pending.queryByText(/attempt/)).toBeNull();
    expect(pending.getByText('—')).toBeInTheDocument();

    const failed = within(row(3));
    expect(failed.getByText('failed')).toHaveClass('badge-danger');
    expect(failed.getByText('12 attempts')).toBeInTheDocument();
    expect(failed.getByText('upstream errors')).toBeInTheDocument();
    // Only a user subject is a link.
    expect(failed.getByText('gw-1').closest('a')).toBeNull();

    const none = within(row(4));
    expect(none.getByText('not sent')).toHaveClass('badge-neutral');
    expect(none.getByText('gateway').closest('a')).toBeNull();

    expect(screen.getByTestId('alerts-24h')).toHaveTextContent('4 alerts in the last 24 hours');
    expect(screen.queryByRole('button', { name: 'Older alerts' })).toBeNull();
  });

  it('follows the user link to the user’s page', async () => {
    setup(() => page([alert(1, { subject: 'bob/ops' })]));
    const ue = userEvent.setup();
    renderApp('/alerts');
    await ue.click(await screen.findByRole('link', { name: 'bob/ops' }));
    expect(window.location.pathname).toBe('/users/bob%2Fops');
  });

  it('pages to older alerts with the cursor', async () => {
    const api = setup((cursor) =>
      cursor === null
        ? page([alert(10), alert(9)], 9, 7)
        : cursor === '9'
          ? page([alert(8, { subject: 'carol', delivery: 'delivered', attempts: 2, delivered_at: NOW })], null, 7)
          : page([]),
    );
    const ue = userEvent.setup();
    renderApp('/alerts');
    await ue.click(await screen.findByRole('button', { name: 'Older alerts' }));
    await waitFor(() => expect(row(8)).toBeTruthy());
    const asked = api.to('/api/admin/alerts').filter((c) => c.query.get('limit') === '50');
    expect(asked.map((c) => c.query.get('cursor'))).toEqual([null, '9']);
    // The older page is added below the first, newest first.
    const ids = [...document.querySelectorAll('tr[data-alert]')].map((r) => r.getAttribute('data-alert'));
    expect(ids).toEqual(['10', '9', '8']);
    expect(within(row(8)).getByText('2 attempts')).toBeInTheDocument();
    expect(screen.queryByRole('button', { name: 'Older alerts' })).toBeNull();
  });

  it('says how to write rules when none is configured', async () => {
    setup(() => page([], null, 0));
    renderApp('/alerts');
    expect(await screen.findByText('No alert rules are configured')).toBeInTheDocument();
    expect(screen.getAllByText('[[alerts]]').length).toBeGreaterThan(0);
    expect(screen.getByText(/kind = "user_limit"/)).toBeInTheDocument();
    expect(screen.getByTestId('alerts-24h')).toHaveTextContent('0 alerts in the last 24 hours');
  });

  it('names the rules in force when none has fired yet', async () => {
    const config = {
      ...configView,
      config: { ...configView.config, alerts: [{ kind: 'user_limit', percent: [80, 100] }, { name: 'big spend', kind: 'spend', window: 'day', usd: 50 }] },
    };
    setup(() => page([], null, 0), config);
    renderApp('/alerts');
    expect(await screen.findByText('No alert has fired yet')).toBeInTheDocument();
    expect(screen.getByText(/2 rules are in force \(user_limit, big spend\)/)).toBeInTheDocument();
  });

  it('shows an error with a retry', async () => {
    let fail = true;
    mockApi({
      'GET /api/admin/me': () => ({ body: me }),
      'GET /api/admin/stats': () => ({ body: stats() }),
      'GET /api/admin/config': () => ({ body: configView }),
      'GET /api/admin/alerts': () =>
        fail ? { status: 503, body: { error: { code: 'unavailable', message: 'the database is busy; try again' } } } : { body: page([alert(1)]) },
    });
    const ue = userEvent.setup();
    renderApp('/alerts');
    expect(await screen.findByText('the database is busy; try again')).toBeInTheDocument();
    fail = false;
    await ue.click(screen.getByRole('button', { name: /Retry/ }));
    await waitFor(() => expect(row(1)).toBeTruthy());
  });
});

describe('the alerts badge in the menu', () => {
  async function nav() {
    return within(await screen.findByRole('navigation', { name: 'Main' }));
  }

  it('counts the alerts of the last 24 hours on every page, asking for one row', async () => {
    const api = setup(() => page([alert(1)], 1, 3));
    renderApp('/users');
    const link = await (await nav()).findByRole('link', { name: 'Alerts (3 alerts in the last 24 hours)' });
    expect(link).toHaveAttribute('href', '/alerts');
    expect(within(link).getByTestId('alert-count')).toHaveTextContent('3');
    expect(api.to('/api/admin/alerts').map((c) => c.query.get('limit'))).toEqual(['1']);
  });

  it('says "1 alert", shows 99+ past 99, and nothing at 0', async () => {
    setup(() => page([alert(1)], null, 1));
    const first = renderApp('/');
    await (await nav()).findByRole('link', { name: 'Alerts (1 alert in the last 24 hours)' });
    first.unmount();

    setup(() => page([alert(1)], null, 1234));
    const many = renderApp('/');
    const link = await (await nav()).findByRole('link', { name: 'Alerts (1,234 alerts in the last 24 hours)' });
    expect(within(link).getByTestId('alert-count')).toHaveTextContent(/^99\+/);
    many.unmount();

    setup(() => page([], null, 0));
    const { client } = renderApp('/');
    const menu = await nav();
    await waitFor(() => expect(client.getQueryData(keys.alertCount)).toBeDefined());
    expect(menu.getByRole('link', { name: 'Alerts' })).toBeInTheDocument();
    expect(screen.queryByTestId('alert-count')).toBeNull();
  });
});
