import { useIsFetching, useQueryClient } from '@tanstack/react-query';
import { lazy, Suspense, useEffect, useState, type ComponentType, type ReactNode } from 'react';
import { useAlertCount, useTimeZone } from './api/hooks';
import { Icon, type IconName } from './components/Icon';
import { LoadingBlock } from './components/ui';
import { formatDateTime, formatInt } from './lib/format';
import { Link, matchPath, useRouter } from './lib/router';
import { LOGIN_PATH, useSession } from './lib/session';
import { SignIn } from './pages/SignIn';

// Pages load on first visit: the sign-in page does not carry the charts.
const Overview = lazy(() => import('./pages/Overview'));
const Users = lazy(() => import('./pages/Users'));
const UserDetail = lazy(() => import('./pages/UserDetail'));
const Plans = lazy(() => import('./pages/Plans'));
const Audit = lazy(() => import('./pages/Audit'));
const Settings = lazy(() => import('./pages/Settings'));
const Export = lazy(() => import('./pages/Export'));
const Alerts = lazy(() => import('./pages/Alerts'));

interface NavItem {
  to: string;
  label: string;
  icon: IconName;
  match: (path: string) => boolean;
  /** A count beside the label. */
  badge?: ComponentType;
}

/** The alerts of the last 24 hours, as a pill on the nav item; nothing when there are none. */
function AlertCount() {
  const count = useAlertCount();
  const n = count.data ?? 0;
  if (n <= 0) return null;
  const label = `${formatInt(n)} ${n === 1 ? 'alert' : 'alerts'} in the last 24 hours`;
  return (
    <span className="nav-count" title={label} data-testid="alert-count">
      <span aria-hidden="true">{n > 99 ? '99+' : n}</span>
      <span className="visually-hidden"> ({label})</span>
    </span>
  );
}

const NAV: NavItem[] = [
  { to: '/', label: 'Overview', icon: 'overview', match: (p) => p === '/' },
  { to: '/users', label: 'Users', icon: 'users', match: (p) => p === '/users' || p.startsWith('/users/') },
  { to: '/plans', label: 'Plans', icon: 'layers', match: (p) => p === '/plans' },
  { to: '/alerts', label: 'Alerts', icon: 'bell', match: (p) => p === '/alerts', badge: AlertCount },
  { to: '/audit', label: 'Audit log', icon: 'audit', match: (p) => p === '/audit' },
  { to: '/export', label: 'CSV export', icon: 'download', match: (p) => p === '/export' },
  { to: '/settings', label: 'Settings', icon: 'settings', match: (p) => p === '/settings' },
];

function route(pathname: string): { page: ReactNode; title: string } {
  if (pathname === '/' || pathname === '') return { page: <Overview />, title: 'Overview' };
  if (pathname === '/users') return { page: <Users />, title: 'Users' };
  const user = matchPath('/users/:id', pathname);
  if (user) return { page: <UserDetail id={user.id!} />, title: user.id! };
  if (pathname === '/plans') return { page: <Plans />, title: 'Plans' };
  if (pathname === '/alerts') return { page: <Alerts />, title: 'Alerts' };
  if (pathname === '/audit') return { page: <Audit />, title: 'Audit log' };
  if (pathname === '/settings') return { page: <Settings />, title: 'Settings' };
  if (pathname === '/export') return { page: <Export />, title: 'CSV export' };
  return { page: <NotFound />, title: 'Not found' };
}

function NotFound() {
  return (
    <div className="page">
      <h1>Page not found</h1>
      <p>
        There is no page at this address. <Link to="/">Go to the overview</Link>.
      </p>
    </div>
  );
}

/** "Updated 14:05:09" and a button to refresh now; a dot while anything loads. */
function RefreshStatus({ timeZone }: { timeZone: string }) {
  const qc = useQueryClient();
  const fetching = useIsFetching();
  const [updated, setUpdated] = useState(() => Date.now());
  useEffect(() => {
    if (fetching === 0) setUpdated(Date.now());
  }, [fetching]);
  return (
    <div className="refresh">
      <span className={`live-dot ${fetching ? 'busy' : ''}`} aria-hidden="true" />
      <span className="refresh-text" aria-live="polite">
        {fetching ? 'Refreshing…' : `Updated ${formatDateTime(updated, timeZone).slice(11)}`}
      </span>
      <button
        type="button"
        className="btn-icon"
        aria-label="Refresh now"
        title="Refresh now (data also refreshes every 20 seconds)"
        onClick={() => void qc.invalidateQueries({ predicate: (q) => q.queryKey[0] !== 'me' })}
      >
        <Icon name="refresh" size={16} />
      </button>
    </div>
  );
}

function Shell() {
  const { location } = useRouter();
  const { admin, signOut } = useSession();
  const timeZone = useTimeZone();
  const [menuOpen, setMenuOpen] = useState(false);
  const { page, title } = route(location.pathname);

  useEffect(() => {
    document.title = `${title} · Tollgate`;
    setMenuOpen(false);
  }, [title, location.pathname]);

  return (
    <div className={`shell ${menuOpen ? 'menu-open' : ''}`}>
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <button
          type="button"
          className="btn-icon menu-button"
          aria-label={menuOpen ? 'Close the menu' : 'Open the menu'}
          aria-expanded={menuOpen}
          aria-controls="sidebar"
          onClick={() => setMenuOpen((o) => !o)}
        >
          <Icon name={menuOpen ? 'close' : 'menu'} />
        </button>
        <Link to="/" className="brand">
          <svg width="22" height="22" viewBox="0 0 32 32" aria-hidden="true">
            <rect width="32" height="32" rx="7" fill="var(--accent)" />
            <path d="M7 11h18v3H7zM10 14h3v11h-3zM19 14h3v11h-3z" fill="#fff" />
          </svg>
          <span>Tollgate</span>
        </Link>
        <div className="topbar-right">
          <span className="tz-pill" title="Days, limits and times on these pages are in the gateway's time zone (limits.timezone)">
            <Icon name="clock" size={14} />
            <span className="visually-hidden">Time zone: </span>
            <span data-testid="timezone">{timeZone}</span>
          </span>
          <RefreshStatus timeZone={timeZone} />
        </div>
      </header>
      <nav id="sidebar" className="sidebar" aria-label="Main">
        <ul>
          {NAV.map((item) => {
            const active = item.match(location.pathname);
            const Badge = item.badge;
            return (
              <li key={item.to}>
                <Link to={item.to} className={active ? 'active' : ''} aria-current={active ? 'page' : undefined}>
                  <Icon name={item.icon} />
                  <span>{item.label}</span>
                  {Badge && <Badge />}
                </Link>
              </li>
            );
          })}
        </ul>
        <div className="sidebar-foot">
          <div className="who" title={admin?.expires_at ? `Session ends ${formatDateTime(admin.expires_at, timeZone)} ${timeZone}` : undefined}>
            Signed in as <strong data-testid="admin-name">{admin?.admin}</strong>
          </div>
          <button type="button" className="btn btn-ghost btn-block" onClick={() => void signOut()}>
            <Icon name="logout" size={16} /> Sign out
          </button>
        </div>
      </nav>
      {menuOpen && <div className="scrim" onClick={() => setMenuOpen(false)} aria-hidden="true" />}
      <main id="main" tabIndex={-1}>
        <Suspense fallback={<div className="page"><LoadingBlock /></div>}>{page}</Suspense>
      </main>
    </div>
  );
}

export function App() {
  const { location } = useRouter();
  if (location.pathname === LOGIN_PATH) return <SignIn />;
  return <Shell />;
}
