import { screen } from '@testing-library/react';
import { describe, expect, it } from 'vitest';
import { configView, me, mockApi, stats } from '../test/mockApi';
import { renderApp } from '../test/render';
import { auditChanges } from './AuditTable';

describe('the audit log', () => {
  it('reads what changed', () => {
    const before = JSON.stringify({ blocked: false, blocked_reason: null, overrides: { daily_tokens: null, max_concurrent: 2, monthly_cost_nano_usd: 2_500_000_000 } });
    const after = JSON.stringify({ blocked: true, blocked_reason: 'abuse', overrides: { daily_tokens: 5000, max_concurrent: 2, monthly_cost_nano_usd: null } });
    expect(auditChanges({ before_json: before, after_json: after })).toEqual([
      'blocked: false → true',
      'blocked_reason: none → “abuse”',
      'daily_tokens: default → 5000',
      'monthly_cost: $2.50 → default',
    ]);
    expect(auditChanges({ before_json: null, after_json: null })).toEqual([]);
    expect(auditChanges({ before_json: '{', after_json: '}' })).toEqual([]);
  });

  it('lists entries newest first with links to users, and filters by target', async () => {
    const api = mockApi({
      'GET /api/admin/me': () => ({ body: me }),
      'GET /api/admin/stats': () => ({ body: stats({ timezone: 'UTC' }) }),
      'GET /api/admin/config': () => ({ body: configView }),
      'GET /api/admin/audit': (c) => ({
        body: {
          entries: c.query.get('target') === 'nobody' ? [] : [
            { id: 2, ts: Date.now() - 60_000, actor: 'ops', action: 'block', target: 'alice', before_json: null, after_json: null, detail: 'abuse' },
            { id: 1, ts: Date.now() - 120_000, actor: 'ops', action: 'login', target: null, before_json: null, after_json: null, detail: 'from 127.0.0.1' },
          ],
          next_cursor: null,
        },
      }),
    });
    renderApp('/audit');
    expect(await screen.findByRole('link', { name: 'alice' })).toHaveAttribute('href', '/users/alice');
    expect(screen.getByText('blocked')).toBeInTheDocument();
    expect(screen.getByText('from 127.0.0.1')).toBeInTheDocument();
    renderApp('/audit?target=nobody');
    expect(await screen.findByText('No entries about “nobody”')).toBeInTheDocument();
    expect(api.to('/api/admin/audit').some((c) => c.query.get('target') === 'nobody')).toBe(true);
  });
});
