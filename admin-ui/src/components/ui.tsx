// Small building blocks shared by the pages: loading, empty and error states, cards, badges,
// usage bars, relative times.

import { useEffect, useState, type ReactNode } from 'react';
import { ApiError } from '../api/client';
import { formatDateTime, formatRelative, ratio } from '../lib/format';
import { Icon, type IconName } from './Icon';

export function Spinner({ label = 'Loading…' }: { label?: string }) {
  return (
    <span className="spinner" role="status">
      <span className="spinner-ring" aria-hidden="true" />
      <span className="visually-hidden">{label}</span>
    </span>
  );
}

/** Grey placeholders where numbers will be. */
export function Skeleton({ width = '100%', height = '1em' }: { width?: string | number; height?: string | number }) {
  return <span className="skeleton" style={{ width, height }} aria-hidden="true" />;
}

export function LoadingBlock({ label = 'Loading…', rows = 4 }: { label?: string; rows?: number }) {
  return (
    <div className="loading-block" aria-busy="true">
      <Spinner label={label} />
      {Array.from({ length: rows }, (_, i) => (
        <Skeleton key={i} height="1.25rem" width={`${90 - i * 12}%`} />
      ))}
    </div>
  );
}

export function errorMessage(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  if (error instanceof Error) return error.message;
  return 'Something went wrong.';
}

/** An error with what happened and a way to try again. */
export function ErrorBanner({
  error,
  title = 'Could not load this',
  onRetry,
}: {
  error: unknown;
  title?: string;
  onRetry?: () => void;
}) {
  return (
    <div className="banner banner-error" role="alert">
      <Icon name="alert" />
      <div className="banner-text">
        <strong>{title}</strong>
        <span>{errorMessage(error)}</span>
      </div>
      {onRetry && (
        <button type="button" className="btn btn-small" onClick={onRetry}>
          <Icon name="refresh" size={14} /> Retry
        </button>
      )}
    </div>
  );
}

export function EmptyState({ title, children, icon = 'inbox' }: { title: string; children?: ReactNode; icon?: IconName }) {
  return (
    <div className="empty">
      <Icon name={icon} size={28} />
      <p className="empty-title">{title}</p>
      {children && <div className="empty-text">{children}</div>}
    </div>
  );
}

export function Card({
  title,
  actions,
  children,
  className,
  id,
}: {
  title?: ReactNode;
  actions?: ReactNode;
  children: ReactNode;
  className?: string;
  id?: string;
}) {
  const headingId = id ? `${id}-title` : undefined;
  return (
    <section className={`card ${className ?? ''}`} aria-labelledby={title ? headingId : undefined} id={id}>
      {(title || actions) && (
        <header className="card-head">
          {title && (
            <h2 className="card-title" id={headingId}>
              {title}
            </h2>
          )}
          {actions && <div className="card-actions">{actions}</div>}
        </header>
      )}
      {children}
    </section>
  );
}

/** A headline number with a label and a secondary line. */
export function Stat({
  label,
  value,
  sub,
  title,
  testId,
  loading,
}: {
  label: string;
  value: ReactNode;
  sub?: ReactNode;
  title?: string;
  testId?: string;
  loading?: boolean;
}) {
  return (
    <div className="stat" data-testid={testId}>
      <div className="stat-label">{label}</div>
      <div className="stat-value" title={title} data-value-for={testId}>
        {loading ? <Skeleton width="5ch" height="1.6rem" /> : value}
      </div>
      {sub !== undefined && <div className="stat-sub">{loading ? <Skeleton width="9ch" /> : sub}</div>}
    </div>
  );
}

export function Badge({ tone = 'neutral', children, title }: { tone?: 'neutral' | 'danger' | 'warn' | 'ok' | 'info' | 'plan'; children: ReactNode; title?: string }) {
  return (
    <span className={`badge badge-${tone}`} title={title}>
      {children}
    </span>
  );
}

/** Used against a limit: a bar that turns amber past 80% and red at 100%. */
export function UsageBar({
  used,
  limit,
  label,
  text,
}: {
  used: number;
  limit: number | null | undefined;
  /** What is measured, for screen readers ("Tokens today"). */
  label: string;
  /** The visible figure ("12K / 100K"). */
  text: ReactNode;
}) {
  const r = ratio(used, limit);
  const tone = !limit ? 'none' : r >= 1 ? 'over' : r >= 0.8 ? 'high' : 'ok';
  return (
    <div className="usage">
      <div className="usage-text">{text}</div>
      {limit ? (
        <div
          className={`usage-bar usage-${tone}`}
          role="meter"
          aria-label={label}
          aria-valuemin={0}
          aria-valuemax={limit}
          aria-valuenow={Math.min(used, limit)}
          aria-valuetext={`${Math.round(r * 100)}% of the limit`}
        >
          <span style={{ width: `${Math.max(r * 100, used > 0 ? 2 : 0)}%` }} />
        </div>
      ) : null}
    </div>
  );
}

/** "now" that moves every `ms` so that relative times stay true. */
export function useNow(ms = 30_000): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(t);
  }, [ms]);
  return now;
}

/** "3 min. ago", with the absolute time (and its zone) on hover and for screen readers. */
export function RelativeTime({ ts, timeZone, never = 'never' }: { ts: number | null | undefined; timeZone: string; never?: string }) {
  const now = useNow();
  if (ts === null || ts === undefined) return <span className="muted">{never}</span>;
  const abs = `${formatDateTime(ts, timeZone)} ${timeZone}`;
  return (
    <time dateTime={new Date(ts).toISOString()} title={abs}>
      {formatRelative(ts, now)}
    </time>
  );
}

/** A segmented choice (7 / 30 / 90 days). */
export function Segmented<T extends string | number>({
  label,
  value,
  options,
  onChange,
}: {
  label: string;
  value: T;
  options: { value: T; label: string }[];
  onChange: (v: T) => void;
}) {
  return (
    <div className="segmented" role="group" aria-label={label}>
      {options.map((o) => (
        <button
          key={String(o.value)}
          type="button"
          className={o.value === value ? 'active' : ''}
          aria-pressed={o.value === value}
          onClick={() => onChange(o.value)}
        >
          {o.label}
        </button>
      ))}
    </div>
  );
}
