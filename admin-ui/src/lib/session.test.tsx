import { screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it } from 'vitest';
import { configView, me, mockApi, stats, user, usersPage } from '../test/mockApi';
import { renderApp } from '../test/render';
import { loginPath, safeNext } from './session';

const unauthorized = { status: 401, body: { error: { code: 'unauthorized', message: 'the session has expired or was ended; sign in again' } } };

describe('sessions', () => {
  it('sends a visitor without a session to the sign-in page, and back after signing in', async () => {
    let signedIn = false;
    const api = mockApi({
      'GET /api/admin/me': () => (signedIn ? { body: me } : unauthorized),
      'POST /api/admin/login': (c) => {
        const b = c.body as { username: string; password: string };
        if (b.password !== 'correct horse battery') return { status: 401, body: { error: { code: 'unauthorized', message: 'wrong account name or password' } } };
        signedIn = true;
        return { body: me };
      },
      'GET /api/admin/stats': () => (signedIn ? { body: stats() } : unauthorized),
      'GET /api/admin/config': () => ({ body: configView }),
      'GET /api/admin/users': () => (signedIn ? { body: usersPage([user('alice')]) } : unauthorized),
    });
    const ue = userEvent.setup();
    renderApp('/users?q=al');
    expect(await screen.findByRole('heading', { name: 'Sign in to Tollgate' })).toBeInTheDocument();
    expect(window.location.pathname).toBe('/login');
    expect(new URLSearchParams(window.location.search).get('next')).toBe('/users?q=al');
    // A first visit is not an expired session.
    expect(screen.queryByTestId('expired')).not.toBeInTheDocument();

    await ue.type(screen.getByLabelText('Account name'), 'ops');
    await ue.type(screen.getByLabelText('Password'), 'wrong');
    await ue.click(screen.getByRole('button', { name: 'Sign in' }));
    expect(await screen.findByRole('alert')).toHaveTextContent('Wrong account name or password.');
    expect(window.location.pathname).toBe('/login');

    await ue.clear(screen.getByLabelText('Password'));
    await ue.type(screen.getByLabelText('Password'), 'correct horse battery');
    await ue.click(screen.getByRole('button', { name: 'Sign in' }));
    expect(await screen.findByRole('heading', { name: 'Users' })).toBeInTheDocument();
    expect(window.location.pathname + window.location.search).toBe('/users?q=al');
    const login = api.to('/api/admin/login', 'POST').at(-1)!;
    expect(login.body).toEqual({ username: 'ops', password: 'correct horse battery' });
    expect(login.headers['content-type']).toBe('application/json');
    expect(screen.getByTestId('admin-name')).toHaveTextContent('ops');
  });

  it('on a 401 mid-session, says the session expired and returns there after sign-in', async () => {
    let expired = false;
    mockApi({
      'GET /api/admin/me': () => (expired ? unauthorized : { body: me }),
      'POST /api/admin/login': () => {
        expired = false;
        return { body: me };
      },
      'GET /api/admin/stats': () => (expired ? unauthorized : { body: stats() }),
      'GET /api/admin/config': () => ({ body: configView }),
      'GET /api/admin/users': () => (expired ? unauthorized : { body: usersPage([user('alice')]) }),
    });
    const ue = userEvent.setup();
    renderApp('/users');
    expect(await screen.findByText('alice')).toBeInTheDocument();

    // The session ends on the server; the next refresh gets 401.
    expired = true;
    await ue.click(screen.getByRole('button', { name: 'Refresh now' }));
    expect(await screen.findByTestId('expired')).toHaveTextContent('Your session has expired');
    expect(window.location.pathname).toBe('/login');
    expect(new URLSearchParams(window.location.search).get('next')).toBe('/users');
    // Nothing of the previous session is left on screen.
    expect(screen.queryByText('alice')).not.toBeInTheDocument();

    await ue.type(screen.getByLabelText('Account name'), 'ops');
    await ue.type(screen.getByLabelText('Password'), 'correct horse battery');
    await ue.click(screen.getByRole('button', { name: 'Sign in' }));
    expect(await screen.findByText('alice')).toBeInTheDocument();
    expect(window.location.pathname).toBe('/users');
  });

  it('signs out', async () => {
    let signedIn = true;
    const api = mockApi({
      'GET /api/admin/me': () => (signedIn ? { body: me } : unauthorized),
      'POST /api/admin/logout': () => {
        signedIn = false;
        return { status: 204 };
      },
      'GET /api/admin/stats': () => ({ body: stats() }),
      'GET /api/admin/config': () => ({ body: configView }),
      'GET /api/admin/users': () => ({ body: usersPage([]) }),
      'GET /api/admin/usage/series': () => ({ body: { days: 30, by: 'model', since: '2026-10-30', today: '2026-11-28', points: [], timezone: 'UTC' } }),
    });
    const ue = userEvent.setup();
    renderApp('/');
    await ue.click(await screen.findByRole('button', { name: /Sign out/ }));
    expect(await screen.findByText('You are signed out.')).toBeInTheDocument();
    expect(api.to('/api/admin/logout', 'POST')).toHaveLength(1);
    await waitFor(() => expect(window.location.pathname).toBe('/login'));
  });

  it('follows only same-site paths after sign-in', () => {
    expect(safeNext('/users/alice')).toBe('/users/alice');
    expect(safeNext('//evil.example/x')).toBe('/');
    expect(safeNext('https://evil.example')).toBe('/');
    expect(safeNext('/login?next=/x')).toBe('/');
    expect(safeNext(null)).toBe('/');
    expect(loginPath({ pathname: '/audit', search: '?target=a' }, true)).toBe('/login?next=%2Faudit%3Ftarget%3Da&expired=1');
    expect(loginPath({ pathname: '/', search: '' }, false)).toBe('/login');
  });
});
