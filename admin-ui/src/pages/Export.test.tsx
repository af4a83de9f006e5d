import { screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { expect, it } from 'vitest';
import { me, mockApi, stats } from '../test/mockApi';
import { renderApp } from '../test/render';

it('builds the CSV link from the chosen days and user', async () => {
  mockApi({
    'GET /api/admin/me': () => ({ body: me }),
    'GET /api/admin/stats': () => ({ body: stats() }),
  });
  const ue = userEvent.setup();
  renderApp('/export');
  const link = await screen.findByTestId('csv-download');
  // This month by default, in the gateway's days.
  expect(link).toHaveAttribute('href', '/api/admin/usage.csv?from=2026-11-01&to=2026-11-28');
  await ue.click(screen.getByRole('button', { name: 'Last 7 days' }));
  await ue.type(screen.getByLabelText('Only this user (optional)'), 'alice');
  expect(screen.getByTestId('csv-download')).toHaveAttribute('href', '/api/admin/usage.csv?from=2026-11-22&to=2026-11-28&user=alice');
  expect(screen.getByText(/7 days, calls of alice/)).toBeInTheDocument();
  // A period that ends before it starts cannot be downloaded.
  await ue.clear(screen.getByLabelText('First day'));
  await ue.type(screen.getByLabelText('First day'), '2026-11-30');
  expect(await screen.findByText('The first day is after the last day.')).toBeInTheDocument();
  expect(screen.queryByTestId('csv-download')).not.toBeInTheDocument();
});
