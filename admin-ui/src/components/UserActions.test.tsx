import { screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it, vi } from 'vitest';
import { defaultLimits, fromLimits, me, mockApi, noOverrides, proPlan } from '../test/mockApi';
import { renderWithProviders } from '../test/render';
import { BlockDialog, LimitsDialog, limitsPatch, parseLimit, UnblockDialog } from './UserActions';

/** A user on no plan: [limits] applies where they have no override. */
const baseline = { limits: defaultLimits, sources: fromLimits, plan: null };

function api() {
  return mockApi({
    'GET /api/admin/me': () => ({ body: me }),
    'POST /api/admin/user/:id/block': () => ({ body: {} }),
    'POST /api/admin/user/:id/unblock': () => ({ body: {} }),
    'PUT /api/admin/user/:id/limits': () => ({ body: {} }),
  });
}

describe('the block dialog', () => {
  it('wants a reason before it blocks', async () => {
    const m = api();
    const ue = userEvent.setup();
    const onClose = vi.fn();
    renderWithProviders(<BlockDialog user={{ id: 'alice' }} onClose={onClose} />);
    const dialog = await screen.findByRole('dialog', { name: 'Block alice?' });
    expect(dialog).toHaveTextContent('refused with 403');
    await ue.click(screen.getByRole('button', { name: 'Block alice' }));
    expect(await screen.findByText(/Say why/)).toBeInTheDocument();
    expect(screen.getByLabelText(/Reason/)).toHaveAttribute('aria-invalid', 'true');
    expect(m.to('/api/admin/user/alice/block')).toHaveLength(0);
    expect(onClose).not.toHaveBeenCalled();
  });

  it('blocks with the reason once confirmed, as same-origin JSON', async () => {
    const m = api();
    const ue = userEvent.setup();
    const onClose = vi.fn();
    renderWithProviders(<BlockDialog user={{ id: 'a/b c' }} onClose={onClose} />);
    await screen.findByRole('dialog');
    // The reason field has the focus.
    expect(screen.getByLabelText(/Reason/)).toHaveFocus();
    await ue.type(screen.getByLabelText(/Reason/), '  scraping the API  ');
    await ue.click(screen.getByRole('button', { name: 'Block a/b c' }));
    await waitFor(() => expect(onClose).toHaveBeenCalled());
    const [call] = m.to('/api/admin/user/a%2Fb%20c/block', 'POST');
    expect(call!.body).toEqual({ reason: 'scraping the API' });
    expect(call!.headers['content-type']).toBe('application/json');
    expect(call!.credentials).toBe('same-origin');
  });

  it('cancels with Escape without blocking', async () => {
    const m = api();
    const ue = userEvent.setup();
    const onClose = vi.fn();
    renderWithProviders(<BlockDialog user={{ id: 'alice' }} onClose={onClose} />);
    await screen.findByRole('dialog');
    await ue.keyboard('{Escape}');
    expect(onClose).toHaveBeenCalled();
    expect(m.to('/api/admin/user/alice/block')).toHaveLength(0);
  });

  it('shows why blocking failed and stays open', async () => {
    mockApi({
      'GET /api/admin/me': () => ({ body: me }),
      'POST /api/admin/user/:id/block': () => ({ status: 403, body: { error: { code: 'forbidden', message: 'cross-origin request refused' } } }),
    });
    const ue = userEvent.setup();
    const onClose = vi.fn();
    renderWithProviders(<BlockDialog user={{ id: 'alice' }} onClose={onClose} />);
    await ue.type(await screen.findByLabelText(/Reason/), 'x');
    await ue.click(screen.getByRole('button', { name: 'Block alice' }));
    expect(await screen.findByRole('alert')).toHaveTextContent('Blocking failed: cross-origin request refused');
    expect(onClose).not.toHaveBeenCalled();
  });
});

it('unblocks after a confirmation', async () => {
  const m = api();
  const ue = userEvent.setup();
  const onClose = vi.fn();
  renderWithProviders(<UnblockDialog user={{ id: 'bob', blocked_reason: 'abuse' }} onClose={onClose} />);
  expect(await screen.findByText('abuse')).toBeInTheDocument();
  await ue.click(screen.getByRole('button', { name: 'Unblock bob' }));
  await waitFor(() => expect(onClose).toHaveBeenCalled());
  expect(m.to('/api/admin/user/bob/unblock', 'POST')).toHaveLength(1);
});

describe('the limits editor', () => {
  const overrides = { ...noOverrides, daily_tokens: 5000, monthly_cost_nano_usd: 2_500_000_000 };

  it('shows overrides as values and defaults as placeholders', async () => {
    api();
    renderWithProviders(<LimitsDialog user={{ id: 'alice', overrides }} baseline={baseline} onClose={() => {}} />);
    expect(await screen.findByLabelText('Tokens per day')).toHaveValue('5000');
    expect(screen.getByLabelText('Cost per month (USD)')).toHaveValue('2.5');
    expect(screen.getByLabelText('Tokens per month')).toHaveValue('');
    expect(screen.getByLabelText('Tokens per month')).toHaveAttribute('placeholder', '1,000,000');
    expect(screen.getByLabelText('Cost per day (USD)')).toHaveAttribute('placeholder', 'no budget');
  });

  it('on a plan, shows what the plan gives as placeholders, and where each limit would come from', async () => {
    api();
    const ue = userEvent.setup();
    const onPro = { limits: proPlan.limits, sources: proPlan.limit_sources, plan: 'pro' };
    renderWithProviders(<LimitsDialog user={{ id: 'alice', overrides }} baseline={onPro} onClose={() => {}} />);
    const dialog = await screen.findByRole('dialog', { name: 'Limits for alice' });
    expect(dialog).toHaveTextContent("Leave a field empty to follow the user's plan ([plans.pro]), or [limits] where the plan sets nothing.");
    // Set by the plan: its value; left out by the plan: [limits]'s.
    expect(screen.getByLabelText('Tokens per month')).toHaveAttribute('placeholder', '5,000,000');
    expect(screen.getByText('From plan pro', { selector: '#limit-monthly_tokens-hint' })).toBeInTheDocument();
    expect(screen.getByLabelText('Requests per minute')).toHaveAttribute('placeholder', '60');
    expect(screen.getByText('From [limits]', { selector: '#limit-requests_per_minute-hint' })).toBeInTheDocument();
    expect(screen.getByLabelText('Cost per day (USD)')).toHaveAttribute('placeholder', '$2.50');
    // An override says what it replaces.
    expect(screen.getByLabelText('Tokens per day')).toHaveValue('5000');
    expect(screen.getByText('Own limit (without it: 500,000 from plan pro)')).toBeInTheDocument();
    await ue.click(screen.getByRole('button', { name: 'Use the default for tokens per day' }));
    expect(screen.getByText('From plan pro', { selector: '#limit-daily_tokens-hint' })).toBeInTheDocument();
  });

  it('sends only what changed; an emptied field is null (back to the default)', async () => {
    const m = api();
    const ue = userEvent.setup();
    const onClose = vi.fn();
    renderWithProviders(<LimitsDialog user={{ id: 'alice', overrides }} baseline={baseline} onClose={onClose} />);
    await ue.click(await screen.findByRole('button', { name: 'Use the default for tokens per day' }));
    await ue.type(screen.getByLabelText('Requests per minute'), '30');
    await ue.type(screen.getByLabelText('Cost per day (USD)'), '1.25');
    await ue.click(screen.getByRole('button', { name: 'Save limits' }));
    await waitFor(() => expect(onClose).toHaveBeenCalled());
    const [call] = m.to('/api/admin/user/alice/limits', 'PUT');
    expect(call!.body).toEqual({ daily_tokens: null, requests_per_minute: 30, daily_cost_usd: 1.25 });
    expect(call!.headers['content-type']).toBe('application/json');
  });

  it('clears every override with "Clear all"', async () => {
    const m = api();
    const ue = userEvent.setup();
    renderWithProviders(<LimitsDialog user={{ id: 'alice', overrides }} baseline={baseline} onClose={() => {}} />);
    await ue.click(await screen.findByRole('button', { name: 'Clear all' }));
    await ue.click(screen.getByRole('button', { name: 'Save limits' }));
    await waitFor(() => expect(m.to('/api/admin/user/alice/limits')).toHaveLength(1));
    expect(m.to('/api/admin/user/alice/limits')[0]!.body).toEqual({ daily_tokens: null, monthly_cost_usd: null });
  });

  it('refuses bad values and names them', async () => {
    const m = api();
    const ue = userEvent.setup();
    renderWithProviders(<LimitsDialog user={{ id: 'alice', overrides: noOverrides }} baseline={baseline} onClose={() => {}} />);
    await ue.type(await screen.findByLabelText('Tokens per month'), '12.5');
    await ue.type(screen.getByLabelText('Requests per minute'), '0');
    await ue.click(screen.getByRole('button', { name: 'Save limits' }));
    expect(await screen.findByText('A whole number, or empty for the default.')).toBeInTheDocument();
    expect(screen.getByText('At least 1.')).toBeInTheDocument();
    expect(screen.getByLabelText('Tokens per month')).toHaveAttribute('aria-invalid', 'true');
    expect(m.to('/api/admin/user/alice/limits')).toHaveLength(0);
  });

  it('says when nothing changed instead of saving', async () => {
    const m = api();
    const ue = userEvent.setup();
    renderWithProviders(<LimitsDialog user={{ id: 'alice', overrides }} baseline={baseline} onClose={() => {}} />);
    await ue.click(await screen.findByRole('button', { name: 'Save limits' }));
    expect(await screen.findByText('Nothing changed.')).toBeInTheDocument();
    expect(m.to('/api/admin/user/alice/limits')).toHaveLength(0);
  });
});

describe('limit parsing', () => {
  it('reads numbers people type', () => {
    expect(parseLimit('', { kind: 'int', min: 0 })).toEqual({ value: null });
    expect(parseLimit('50,000', { kind: 'int', min: 0 })).toEqual({ value: 50000 });
    expect(parseLimit('$2.50', { kind: 'usd', min: 0 })).toEqual({ value: 2.5 });
    expect(parseLimit('.5', { kind: 'usd', min: 0 })).toEqual({ value: 0.5 });
    expect(parseLimit('-1', { kind: 'usd', min: 0 })).toHaveProperty('error');
    expect(parseLimit('abc', { kind: 'int', min: 0 })).toHaveProperty('error');
  });

  it('treats 2.5 and 2.50 as the same value', () => {
    const initial = { daily_tokens: '', monthly_tokens: '', daily_cost_usd: '2.5', monthly_cost_usd: '', requests_per_minute: '', max_concurrent: '' };
    expect(limitsPatch(initial, { ...initial, daily_cost_usd: '2.50' })).toEqual({});
  });
});
