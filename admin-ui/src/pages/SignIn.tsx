import { useEffect, useState, type FormEvent } from 'react';
import { api, ApiError } from '../api/client';
import { useSearchParams } from '../lib/router';
import { safeNext, useSession } from '../lib/session';

export function SignIn() {
  const params = useSearchParams();
  const { admin, signedIn } = useSession();
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const expired = params.get('expired') === '1';
  const signedOut = params.get('signedout') === '1';
  const next = params.get('next');

  useEffect(() => {
    document.title = 'Sign in · Tollgate';
  }, []);

  // Already signed in (another tab signed in, or a bookmark of the sign-in page): go on.
  useEffect(() => {
    if (admin && !expired && !signedOut) signedIn(admin, next);
  }, [admin, expired, signedOut, next, signedIn]);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (!username || !password) {
      setError('Enter the account name and the password.');
      return;
    }
    setBusy(true);
    setError(null);
    try {
      const info = await api.login(username, password);
      signedIn(info, safeNext(next));
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) setError('Wrong account name or password.');
      else if (err instanceof ApiError && err.status === 429)
        setError('Too many sign-in attempts. Wait a minute and try again.');
      else setError(err instanceof Error ? err.message : 'Sign-in failed.');
      setBusy(false);
    }
  };

  return (
    <div className="signin">
      <form className="signin-card" onSubmit={submit} noValidate aria-labelledby="signin-title">
        <div className="signin-brand">
          <svg width="36" height="36" viewBox="0 0 32 32" aria-hidden="true">
            <rect width="32" height="32" rx="7" fill="var(--accent)" />
            <path d="M7 11h18v3H7zM10 14h3v11h-3zM19 14h3v11h-3z" fill="#fff" />
          </svg>
          <div>
            <h1 id="signin-title">Sign in to Tollgate</h1>
            <p className="muted">The gateway's admin dashboard</p>
          </div>
        </div>
        {expired && (
          <div className="banner banner-warn" role="status" data-testid="expired">
            Your session has expired. Sign in again to continue where you were.
          </div>
        )}
        {signedOut && !expired && (
          <div className="banner banner-info" role="status">
            You are signed out.
          </div>
        )}
        {error && (
          <div className="banner banner-error" role="alert">
            {error}
          </div>
        )}
        <label className="field">
          <span>Account name</span>
          <input
            name="username"
            autoComplete="username"
            autoCapitalize="none"
            spellCheck={false}
            value={username}
            onChange={(e) => setUsername(e.target.value)}
            required
            autoFocus
          />
        </label>
        <label className="field">
          <span>Password</span>
          <input
            name="password"
            type="password"
            autoComplete="current-password"
            value={password}
            onChange={(e) => setPassword(e.target.value)}
            required
          />
        </label>
        <button type="submit" className="btn btn-primary btn-block" disabled={busy}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
        <p className="hint">
          Accounts are made on the server: <code>tollgate admin add NAME</code>.
        </p>
      </form>
    </div>
  );
}
