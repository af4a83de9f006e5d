import { useEffect, useId, useState } from 'react';
import { csvUrl } from '../api/client';
import { useStats } from '../api/hooks';
import { Icon } from '../components/Icon';
import { Card, ErrorBanner, LoadingBlock } from '../components/ui';
import { daysBetween } from '../lib/format';
import { useSearchParams } from '../lib/router';

const DAY = /^\d{4}-\d{2}-\d{2}$/;

function minusDays(day: string, n: number): string {
  const t = Date.parse(`${day}T00:00:00Z`) - n * 86_400_000;
  return new Date(t).toISOString().slice(0, 10);
}

export default function Export() {
  const stats = useStats();
  const params = useSearchParams();
  const today = stats.data?.day;
  const monthStart = stats.data?.month_start;
  const [from, setFrom] = useState('');
  const [to, setTo] = useState('');
  const [user, setUser] = useState(params.get('user') ?? '');
  const ids = { from: useId(), to: useId(), user: useId() };

  useEffect(() => {
    if (today && monthStart && !from && !to) {
      setFrom(monthStart);
      setTo(today);
    }
  }, [today, monthStart, from, to]);

  if (stats.isError && !stats.data) {
    return (
      <div className="page">
        <h1>CSV export</h1>
        <ErrorBanner error={stats.error} onRetry={() => void stats.refetch()} />
      </div>
    );
  }
  if (!today || !monthStart) {
    return (
      <div className="page">
        <h1>CSV export</h1>
        <LoadingBlock />
      </div>
    );
  }

  const error = !DAY.test(from) || !DAY.test(to) ? 'Pick both days.' : from > to ? 'The first day is after the last day.' : null;
  const days = error ? 0 : daysBetween(from, to).length;
  const href = csvUrl(from, to, user.trim() || undefined);
  const presets: { label: string; from: string; to: string }[] = [
    { label: 'Today', from: today, to: today },
    { label: 'Last 7 days', from: minusDays(today, 6), to: today },
    { label: 'This month', from: monthStart, to: today },
    { label: 'Last 30 days', from: minusDays(today, 29), to: today },
  ];

  return (
    <div className="page">
      <div className="page-head">
        <div>
          <h1>CSV export</h1>
          <p className="muted">
            Every call in a period, one row per call (the <code>token_usage</code> columns: time, user, provider, model, status, tokens, cost in nano-USD, usage source, latency, outcome). Days are in {stats.data?.timezone}; both are included.
          </p>
        </div>
      </div>
      <Card title="What to export" id="export">
        <div className="segmented wrap" role="group" aria-label="Presets">
          {presets.map((p) => (
            <button
              key={p.label}
              type="button"
              className={p.from === from && p.to === to ? 'active' : ''}
              aria-pressed={p.from === from && p.to === to}
              onClick={() => {
                setFrom(p.from);
                setTo(p.to);
              }}
            >
              {p.label}
            </button>
          ))}
        </div>
        <div className="form-row">
          <div className="field">
            <label htmlFor={ids.from}>First day</label>
            <input id={ids.from} type="date" value={from} max={today} onChange={(e) => setFrom(e.target.value)} />
          </div>
          <div className="field">
            <label htmlFor={ids.to}>Last day</label>
            <input id={ids.to} type="date" value={to} max={today} onChange={(e) => setTo(e.target.value)} />
          </div>
          <div className="field grow">
            <label htmlFor={ids.user}>Only this user (optional)</label>
            <input id={ids.user} value={user} placeholder="User id" onChange={(e) => setUser(e.target.value)} autoComplete="off" />
          </div>
        </div>
        {error ? (
          <p className="field-error" role="alert">
            {error}
          </p>
        ) : (
          <p className="muted small">
            {days} {days === 1 ? 'day' : 'days'}, {user.trim() ? `calls of ${user.trim()}` : 'all users'}. Large periods stream as they are read.
          </p>
        )}
        <div className="form-actions">
          {error ? (
            <button type="button" className="btn btn-primary" disabled>
              <Icon name="download" size={16} /> Download CSV
            </button>
          ) : (
            <a className="btn btn-primary" href={href} download data-testid="csv-download">
              <Icon name="download" size={16} /> Download CSV
            </a>
          )}
        </div>
      </Card>
    </div>
  );
}
