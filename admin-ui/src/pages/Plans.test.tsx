import { screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it } from 'vitest';
import type { PlansView } from '../api/types';
import { configView, fromLimits, me, mockApi, plansView, stats, user, usersPage } from '../test/mockApi';
import { renderApp } from '../test/render';

function setup(plans: () => { status?: number; body?: unknown }) {
  return mockApi({
    'GET /api/admin/me': () => ({ body: me }),
    'GET /api/admin/stats': () => ({ body: stats() }),
    'GET /api/admin/config': () => ({ body: configView }),
    'GET /api/admin/plans': plans,
    'GET /api/admin/users': () => ({ body: usersPage([user('alice', { plan: 'pro' })]) }),
  });
}

/** A limits table's rows: label → [value, source]. */
function rows(table: HTMLElement) {
  return Object.fromEntries(
    within(table)
      .getAllByRole('row')
      .slice(1)
      .map((r) => {
        const [value, from] = within(r).getAllByRole('cell');
        return [within(r).getByRole('rowheader').textContent, [value!.textContent, from!.textContent]];
      }),
  );
}

/** A `<dl>`'s terms and descriptions. */
function terms(dl: HTMLElement) {
  return Object.fromEntries([...dl.querySelectorAll('dt')].map((dt) => [dt.textContent, dt.nextElementSibling!.textContent]));
}

describe('the plans page', () => {
  it('is in the menu, and shows the claim, the default plan and [limits]', async () => {
    const api = setup(() => ({ body: plansView() }));
    const ue = userEvent.setup();
    renderApp('/');
    await ue.click(await screen.findByRole('link', { name: 'Plans' }));
    expect(await screen.findByRole('heading', { level: 1, name: 'Plans' })).toBeInTheDocument();
    expect(window.location.pathname).toBe('/plans');
    expect(document.title).toBe('Plans · Tollgate');
    expect(await screen.findByTestId('plan-claim')).toHaveTextContent(/^plan$/);
    expect(screen.getByTestId('default-plan')).toHaveTextContent(/^free$/);
    const none = screen.getByRole('region', { name: '[limits]: no plan, and what plans inherit' });
    expect(rows(within(none).getByRole('table'))).toMatchObject({
      'Tokens per day': ['100,000', '[limits]'],
      'Requests per minute': ['60', '[limits]'],
    });
    expect(api.to('/api/admin/plans')).toHaveLength(1);
  });

  it('shows each plan: its limits and which are its own, its models, its output ceiling', async () => {
    setup(() => ({ body: plansView() }));
    renderApp('/plans');
    const free = await screen.findByRole('region', { name: /^free/ });
    const pro = screen.getByRole('region', { name: /^pro/ });
    // The default plan says so; the other does not.
    expect(within(free).getByRole('heading', { level: 2 })).toHaveTextContent(/^free default$/);
    expect(within(pro).getByRole('heading', { level: 2 })).toHaveTextContent(/^pro$/);

    expect(rows(within(free).getByRole('table'))).toEqual({
      'Tokens per day': ['20,000', 'plan free'],
      'Tokens per month': ['1,000,000', '[limits]'],
      'Cost per day': ['no budget', '[limits]'],
      'Cost per month': ['no budget', '[limits]'],
      'Requests per minute': ['60', '[limits]'],
      'Calls at once': ['no cap', '[limits]'],
    });
    expect(free).toHaveTextContent('Sets 1 of the 6 limits; the others are [limits]’s.');
    expect(rows(within(pro).getByRole('table'))).toMatchObject({
      'Tokens per day': ['500,000', 'plan pro'],
      'Tokens per month': ['5,000,000', 'plan pro'],
      'Cost per day': ['$2.50', 'plan pro'],
      'Cost per month': ['no budget', '[limits]'],
    });

    expect(terms(screen.getByTestId('plan-models-free'))).toEqual({ Allowed: 'gpt-4o-mini*gemini-2.5-flash*', Denied: 'none' });
    expect(within(screen.getByTestId('plan-models-free')).getAllByRole('listitem').map((li) => li.textContent)).toEqual([
      'gpt-4o-mini*',
      'gemini-2.5-flash*',
    ]);
    expect(terms(screen.getByTestId('plan-models-pro'))).toEqual({ Allowed: 'every model not denied', Denied: 'o1-pro*' });

    expect(terms(screen.getByTestId('plan-output-free'))).toEqual({
      'Ceiling per call': '1,024 tokens',
      'Asking for more': 'refused (403)',
      'Reserved for a call without a cap': '4,096 tokens',
    });
    expect(terms(screen.getByTestId('plan-output-pro'))).toEqual({
      'Ceiling per call': '8,192 tokens',
      'Asking for more': 'lowered to the ceiling',
      'Reserved for a call without a cap': '2,048 tokens',
    });
  });

  it('a plan without a ceiling says so, and a plan setting no limit says that too', async () => {
    const base = plansView();
    const open: PlansView = {
      ...base,
      default_plan: null,
      plans: [
        {
          ...base.plans[0]!,
          name: 'open',
          default: false,
          limits: base.limits,
          limit_sources: fromLimits,
          models: null,
          max_output_tokens: null,
        },
      ],
    };
    setup(() => ({ body: open }));
    renderApp('/plans');
    const card = await screen.findByRole('region', { name: /^open/ });
    expect(terms(screen.getByTestId('plan-output-open'))).toEqual({ 'Ceiling per call': 'no ceiling', 'Reserved for a call without a cap': '4,096 tokens' });
    expect(card).toHaveTextContent('Sets no limit of its own: the others are [limits]’s.');
    expect(screen.getByTestId('default-plan')).toHaveTextContent('none: a token without the claim is on no plan');
  });

  it('links each plan to its users', async () => {
    const api = setup(() => ({ body: plansView() }));
    const ue = userEvent.setup();
    renderApp('/plans');
    const pro = await screen.findByRole('region', { name: /^pro/ });
    await ue.click(within(pro).getByRole('link', { name: 'Users on pro' }));
    expect(await screen.findByRole('heading', { level: 1, name: 'Users' })).toBeInTheDocument();
    expect(window.location.search).toBe('?plan=pro');
    await waitFor(() => expect(api.to('/api/admin/users').at(-1)!.query.get('plan')).toBe('pro'));
    await waitFor(() => expect(screen.getByLabelText('Plan')).toHaveValue('pro'));
  });

  it('says how to write a plan when none is configured', async () => {
    setup(() => ({ body: plansView({ plans: [], default_plan: null, plan_claim: 'tier' }) }));
    renderApp('/plans');
    expect(await screen.findByText('No plans are configured')).toBeInTheDocument();
    expect(screen.getByText(/\[plans\.free\]/, { selector: 'pre' })).toBeInTheDocument();
    expect(screen.getByTestId('plan-claim')).toHaveTextContent(/^tier$/);
    expect(screen.queryByRole('region', { name: /^free/ })).not.toBeInTheDocument();
  });

  it('shows an error with a retry that works', async () => {
    let fail = true;
    setup(() => (fail ? { status: 503, body: { error: { code: 'unavailable', message: 'try again' } } } : { body: plansView() }));
    const ue = userEvent.setup();
    renderApp('/plans');
    const alert = await screen.findByRole('alert');
    expect(alert).toHaveTextContent('Could not load the plans');
    expect(alert).toHaveTextContent('try again');
    fail = false;
    await ue.click(within(alert).getByRole('button', { name: /Retry/ }));
    expect(await screen.findByRole('region', { name: /^pro/ })).toBeInTheDocument();
    expect(screen.queryByRole('alert')).not.toBeInTheDocument();
  });
});
