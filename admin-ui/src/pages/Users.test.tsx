import { screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it } from 'vitest';
import type { PlansView, UserView } from '../api/types';
import { configView, me, mockApi, plansView, stats, user, usersPage } from '../test/mockApi';
import { renderApp } from '../test/render';

function lastUsersQuery(api: ReturnType<typeof mockApi>) {
  const calls = api.to('/api/admin/users');
  return Object.fromEntries(calls[calls.length - 1]!.query);
}

function setup(total = 60, pageUsers = [user('alice', { name: 'Alice' }), user('bob', { blocked: true, blocked_reason: 'abuse' })]) {
  return mockApi({
    'GET /api/admin/me': () => ({ body: me }),
    'GET /api/admin/stats': () => ({ body: stats() }),
    'GET /api/admin/config': () => ({ body: configView }),
    'GET /api/admin/users': (c) =>
      ({ body: usersPage(pageUsers, total, Number(c.query.get('limit')), Number(c.query.get('offset'))) }),
  });
}

describe('the users table', () => {
  it('asks for the first page sorted by this month’s tokens, and shows each user', async () => {
    const api = setup();
    renderApp('/users');
    expect(await screen.findByText('alice')).toBeInTheDocument();
    expect(lastUsersQuery(api)).toEqual({ sort: 'tokens_month', order: 'desc', limit: '25', offset: '0' });
    const bob = screen.getByText('bob').closest('tr')!;
    expect(within(bob).getByText('Blocked')).toBeInTheDocument();
    expect(within(bob).getByRole('button', { name: 'Unblock bob' })).toBeInTheDocument();
    const alice = screen.getByText('alice').closest('tr')!;
    expect(within(alice).getByRole('button', { name: 'Block alice' })).toBeInTheDocument();
    expect(within(alice).getByRole('meter', { name: 'Tokens today of alice' })).toHaveAttribute('aria-valuenow', '1200');
    expect(within(alice).getByText('$0.03')).toBeInTheDocument();
    expect(within(alice).getByText('5 min. ago')).toBeInTheDocument();
    expect(screen.getByText('1–25 of 60')).toBeInTheDocument();
  });

  it('sorts by a column header, and flips the order on a second click', async () => {
    const api = setup();
    const ue = userEvent.setup();
    renderApp('/users');
    await screen.findByText('alice');
    await ue.click(screen.getByRole('button', { name: /^Cost this month/ }));
    await waitFor(() => expect(lastUsersQuery(api)).toMatchObject({ sort: 'cost_month', order: 'desc', offset: '0' }));
    expect(screen.getByRole('columnheader', { name: /Cost this month/ })).toHaveAttribute('aria-sort', 'descending');
    await ue.click(screen.getByRole('button', { name: /^Cost this month/ }));
    await waitFor(() => expect(lastUsersQuery(api)).toMatchObject({ sort: 'cost_month', order: 'asc' }));
    expect(window.location.search).toBe('?sort=cost_month&order=asc');
  });

  it('sorts from the select too (the only sort control on a phone)', async () => {
    const api = setup();
    const ue = userEvent.setup();
    renderApp('/users');
    await screen.findByText('alice');
    await ue.selectOptions(screen.getByLabelText('Sort by'), 'last_seen');
    await waitFor(() => expect(lastUsersQuery(api)).toMatchObject({ sort: 'last_seen', order: 'desc' }));
  });

  it('searches once typing pauses, from the first page', async () => {
    const api = setup();
    const ue = userEvent.setup();
    renderApp('/users?page=2');
    await screen.findByText('alice');
    expect(lastUsersQuery(api)).toMatchObject({ offset: '25' });
    await ue.type(screen.getByLabelText('Search'), 'ali');
    await waitFor(() => expect(lastUsersQuery(api)).toMatchObject({ search: 'ali', offset: '0' }));
    // One request for the search, not one per keystroke.
    expect(api.to('/api/admin/users').filter((c) => c.query.get('search')).length).toBe(1);
  });

  it('pages forward and back, and changes the page size', async () => {
    const api = setup(60);
    const ue = userEvent.setup();
    renderApp('/users');
    await screen.findByText('alice');
    expect(screen.getByRole('button', { name: /Previous/ })).toBeDisabled();
    await ue.click(screen.getByRole('button', { name: /Next/ }));
    await waitFor(() => expect(lastUsersQuery(api)).toMatchObject({ offset: '25', limit: '25' }));
    expect(await screen.findByText('26–50 of 60')).toBeInTheDocument();
    await ue.click(screen.getByRole('button', { name: /Next/ }));
    await waitFor(() => expect(lastUsersQuery(api)).toMatchObject({ offset: '50' }));
    expect(await screen.findByText('Page 3 of 3')).toBeInTheDocument();
    expect(screen.getByRole('button', { name: /Next/ })).toBeDisabled();
    await ue.click(screen.getByRole('button', { name: /Previous/ }));
    await waitFor(() => expect(lastUsersQuery(api)).toMatchObject({ offset: '25' }));
    await ue.selectOptions(screen.getByLabelText('Per page'), '50');
    await waitFor(() => expect(lastUsersQuery(api)).toMatchObject({ offset: '0', limit: '50' }));
  });

  it('says so when there are no users yet', async () => {
    setup(0, []);
    renderApp('/users');
    expect(await screen.findByText('No users yet')).toBeInTheDocument();
  });

  it('says so when a search matches nobody, and clears it', async () => {
    const api = setup(0, []);
    const ue = userEvent.setup();
    renderApp('/users?q=zzz');
    expect(await screen.findByText('No user matches “zzz”')).toBeInTheDocument();
    await ue.click(screen.getByRole('button', { name: 'Clear the search' }));
    await waitFor(() => expect(lastUsersQuery(api).search).toBeUndefined());
  });

  it('shows an error with a retry that works', async () => {
    let fail = true;
    mockApi({
      'GET /api/admin/me': () => ({ body: me }),
      'GET /api/admin/stats': () => ({ body: stats() }),
      'GET /api/admin/config': () => ({ body: configView }),
      'GET /api/admin/users': () =>
        fail
          ? { status: 503, body: { error: { code: 'unavailable', message: 'the database is busy; try again' } } }
          : { body: usersPage([user('alice')]) },
    });
    const ue = userEvent.setup();
    renderApp('/users');
    const alert = await screen.findByRole('alert');
    expect(alert).toHaveTextContent('Could not load the users');
    expect(alert).toHaveTextContent('the database is busy; try again');
    fail = false;
    await ue.click(within(alert).getByRole('button', { name: /Retry/ }));
    expect(await screen.findByText('alice')).toBeInTheDocument();
    expect(screen.queryByRole('alert')).not.toBeInTheDocument();
  });
});

describe('plans on the users table', () => {
  const onPlans = [user('alice', { plan: 'pro' }), user('bob', { plan: 'free' }), user('carol')];

  function setupPlans(plans: PlansView = plansView(), users: (plan: string | null) => UserView[] = (plan) => onPlans.filter((u) => !plan || u.plan === plan)) {
    return mockApi({
      'GET /api/admin/me': () => ({ body: me }),
      'GET /api/admin/stats': () => ({ body: stats() }),
      'GET /api/admin/config': () => ({ body: configView }),
      'GET /api/admin/plans': () => ({ body: plans }),
      'GET /api/admin/users': (c) => {
        const list = users(c.query.get('plan'));
        return { body: usersPage(list, list.length) };
      },
    });
  }

  it('shows each user’s plan in its column', async () => {
    setupPlans();
    renderApp('/users');
    await screen.findByText('alice');
    expect(screen.getByRole('columnheader', { name: 'Plan' })).toBeInTheDocument();
    const plan = (id: string) => within(screen.getByText(id).closest('tr')!).getByRole('cell', { name: /pro|free|no plan/ });
    expect(plan('alice')).toHaveTextContent(/^pro$/);
    expect(plan('alice')).toHaveAttribute('data-plan', 'pro');
    expect(plan('bob')).toHaveTextContent(/^free$/);
    expect(plan('carol')).toHaveTextContent(/^no plan$/);
  });

  it('filters by plan from a select of the configured plans, kept in the address', async () => {
    const api = setupPlans();
    const ue = userEvent.setup();
    renderApp('/users?page=2');
    await screen.findByText('alice');
    const select = screen.getByLabelText('Plan');
    await waitFor(() => expect(within(select).getAllByRole('option').map((o) => o.textContent)).toEqual(['All plans', 'free', 'pro']));
    expect(select).toHaveValue('');
    expect(lastUsersQuery(api).plan).toBeUndefined();
    await ue.selectOptions(select, 'pro');
    await waitFor(() => expect(lastUsersQuery(api)).toMatchObject({ plan: 'pro', offset: '0' }));
    expect(window.location.search).toBe('?plan=pro');
    await waitFor(() => expect(screen.queryByText('bob')).not.toBeInTheDocument());
    expect(screen.getByText('alice')).toBeInTheDocument();
    expect(screen.getByRole('table')).toHaveAccessibleName(/^Users on plan “pro”, sorted by/);
    await ue.selectOptions(select, '');
    await waitFor(() => expect(lastUsersQuery(api).plan).toBeUndefined());
    expect(window.location.search).toBe('');
    expect(await screen.findByText('bob')).toBeInTheDocument();
  });

  it('opens filtered from the address, even on a plan no longer configured', async () => {
    const api = setupPlans(plansView(), () => []);
    const ue = userEvent.setup();
    renderApp('/users?plan=gold');
    expect(await screen.findByText('No user on plan “gold”')).toBeInTheDocument();
    expect(lastUsersQuery(api)).toMatchObject({ plan: 'gold' });
    const select = screen.getByLabelText('Plan');
    await waitFor(() => expect(within(select).getAllByRole('option').map((o) => o.textContent)).toEqual(['All plans', 'free', 'pro', 'gold']));
    expect(select).toHaveValue('gold');
    await ue.click(screen.getByRole('button', { name: 'Show all plans' }));
    await waitFor(() => expect(lastUsersQuery(api).plan).toBeUndefined());
    expect(screen.getByLabelText('Plan')).toHaveValue('');
  });

  it('has no plan filter when no plan is configured', async () => {
    const api = setupPlans(plansView({ plans: [], default_plan: null }));
    renderApp('/users');
    await screen.findByText('alice');
    // The plans are in (an empty list), and rendered.
    await waitFor(() => expect(api.to('/api/admin/plans')).toHaveLength(1));
    await new Promise((r) => setTimeout(r, 50));
    expect(screen.queryByLabelText('Plan')).not.toBeInTheDocument();
    // The column still says who is on which plan (a plan since removed, here).
    expect(within(screen.getByText('alice').closest('tr')!).getByText('pro')).toBeInTheDocument();
  });
});
