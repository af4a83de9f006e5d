// Who is signed in, and what happens when that ends.
//
// `GET /api/admin/me` says whether the browser holds a live session. Any 401 from the API
// afterwards (the session expired, was ended elsewhere, or the server restarted with a new
// database) sends the operator to the sign-in page with "your session has expired" and the page
// they were on, to which sign-in returns them.

import { useQuery, useQueryClient } from '@tanstack/react-query';
import { createContext, useCallback, useContext, useEffect, useMemo, useRef, type ReactNode } from 'react';
import { api, ApiError, setUnauthorizedHandler } from '../api/client';
import { keys } from '../api/hooks';
import type { SessionInfo } from '../api/types';
import { useRouter } from './router';

export const LOGIN_PATH = '/login';

interface SessionValue {
  admin: SessionInfo | null;
  /** Sign-in succeeded: remember it and go back where the operator was headed. */
  signedIn: (info: SessionInfo, next: string | null) => void;
  signOut: () => Promise<void>;
}

const SessionContext = createContext<SessionValue | null>(null);

/** `/login?next=…[&expired=1]` for the page being shown. */
export function loginPath(current: { pathname: string; search: string }, expired: boolean): string {
  const q = new URLSearchParams();
  const here = current.pathname + current.search;
  if (current.pathname !== LOGIN_PATH && here !== '/') q.set('next', here);
  if (expired) q.set('expired', '1');
  const s = q.toString();
  return s ? `${LOGIN_PATH}?${s}` : LOGIN_PATH;
}

/** Only same-site paths are followed after sign-in (never `//evil.example`). */
export function safeNext(next: string | null): string {
  if (!next || !next.startsWith('/') || next.startsWith('//') || next.startsWith(LOGIN_PATH)) return '/';
  return next;
}

async function fetchMe(signal: AbortSignal): Promise<SessionInfo | null> {
  try {
    return await api.me(signal);
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) return null;
    throw e;
  }
}

export function SessionProvider({ children }: { children: ReactNode }) {
  const qc = useQueryClient();
  const { location, navigate } = useRouter();
  const locationRef = useRef(location);
  locationRef.current = location;

  const me = useQuery({
    queryKey: keys.me,
    queryFn: ({ signal }) => fetchMe(signal),
    retry: 1,
    staleTime: 30_000,
    refetchInterval: 60_000,
  });
  const admin = me.data ?? null;
  const wasSignedIn = useRef(false);

  const expire = useCallback(() => {
    const where = locationRef.current;
    if (where.pathname === LOGIN_PATH) return;
    // Drop every cached answer: the next operator must not see them, and nothing refetches.
    qc.cancelQueries();
    qc.removeQueries({ predicate: (q) => q.queryKey[0] !== 'me' });
    qc.setQueryData(keys.me, null);
    wasSignedIn.current = false;
    navigate(loginPath(where, true), { replace: true });
  }, [qc, navigate]);

  useEffect(() => setUnauthorizedHandler(expire), [expire]);

  // Signed in before and not any more (the periodic check found the session gone).
  useEffect(() => {
    if (me.data) wasSignedIn.current = true;
    else if (me.data === null && wasSignedIn.current) expire();
  }, [me.data, expire]);

  // Check again the moment the session's lifetime is over.
  const expiresAt = admin?.expires_at ?? null;
  useEffect(() => {
    if (!expiresAt) return;
    const wait = Math.max(expiresAt - Date.now() + 1000, 1000);
    if (wait > 2 ** 31 - 1) return;
    const t = setTimeout(() => void qc.invalidateQueries({ queryKey: keys.me }), wait);
    return () => clearTimeout(t);
  }, [expiresAt, qc]);

  const signedIn = useCallback(
    (info: SessionInfo, next: string | null) => {
      wasSignedIn.current = true;
      qc.setQueryData(keys.me, info);
      navigate(safeNext(next), { replace: true });
    },
    [qc, navigate],
  );

  const signOut = useCallback(async () => {
    try {
      await api.logout();
    } finally {
      wasSignedIn.current = false;
      qc.cancelQueries();
      qc.removeQueries({ predicate: (q) => q.queryKey[0] !== 'me' });
      qc.setQueryData(keys.me, null);
      navigate(`${LOGIN_PATH}?signedout=1`, { replace: true });
    }
  }, [qc, navigate]);

  const value = useMemo(() => ({ admin, signedIn, signOut }), [admin, signedIn, signOut]);

  return (
    <SessionContext.Provider value={value}>
      <SessionGate state={me} admin={admin}>
        {children}
      </SessionGate>
    </SessionContext.Provider>
  );
}

/** Until `me` answered: a splash; signed out on a page behind sign-in: off to the sign-in page. */
function SessionGate({
  state,
  admin,
  children,
}: {
  state: { isPending: boolean; isError: boolean; error: unknown; refetch: () => unknown; data: SessionInfo | null | undefined };
  admin: SessionInfo | null;
  children: ReactNode;
}) {
  const { location, navigate } = useRouter();
  const onLogin = location.pathname === LOGIN_PATH;
  const mustSignIn = !onLogin && state.data === null;

  useEffect(() => {
    if (mustSignIn) navigate(loginPath(location, false), { replace: true });
  }, [mustSignIn, location, navigate]);

  if (onLogin) return <>{children}</>;
  if (state.isPending) {
    return (
      <div className="splash" role="status">
        <span className="spinner-ring" aria-hidden="true" />
        <span>Checking your session…</span>
      </div>
    );
  }
  if (state.isError && state.data === undefined) {
    return (
      <div className="splash">
        <div className="banner banner-error" role="alert">
          <div className="banner-text">
            <strong>Tollgate's admin API did not answer</strong>
            <span>{state.error instanceof Error ? state.error.message : 'Unknown error'}</span>
          </div>
          <button type="button" className="btn btn-small" onClick={() => void state.refetch()}>
            Retry
          </button>
        </div>
      </div>
    );
  }
  if (!admin) return null;
  return <>{children}</>;
}

export function useSession(): SessionValue {
  const ctx = useContext(SessionContext);
  if (!ctx) throw new Error('useSession outside SessionProvider');
  return ctx;
}
