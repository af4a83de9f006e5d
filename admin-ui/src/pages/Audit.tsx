import { useEffect, useId, useState } from 'react';
import { useAudit, useTimeZone } from '../api/hooks';
import { AuditTable } from '../components/AuditTable';
import { Card, EmptyState, ErrorBanner, LoadingBlock, Spinner } from '../components/ui';
import { useRouter, useSearchParams } from '../lib/router';

export default function Audit() {
  const params = useSearchParams();
  const { navigate } = useRouter();
  const target = params.get('target') ?? '';
  const [text, setText] = useState(target);
  const inputId = useId();
  const timeZone = useTimeZone();
  const audit = useAudit(target || undefined, 50);
  const entries = audit.data?.pages.flatMap((p) => p.entries) ?? [];

  useEffect(() => setText(target), [target]);

  const apply = (value: string) => {
    const v = value.trim();
    navigate(v ? `/audit?target=${encodeURIComponent(v)}` : '/audit', { replace: true });
  };

  return (
    <div className="page">
      <div className="page-head">
        <div>
          <h1>Audit log</h1>
          <p className="muted">
            Every admin action — sign-ins, blocks, limit changes, reloads — newest first. Read-only. Times in {timeZone}.
          </p>
        </div>
      </div>
      <form
        className="toolbar"
        role="search"
        onSubmit={(e) => {
          e.preventDefault();
          apply(text);
        }}
      >
        <div className="field field-inline grow">
          <label htmlFor={inputId}>Target</label>
          <input id={inputId} type="search" placeholder="A user id" value={text} onChange={(e) => setText(e.target.value)} />
        </div>
        <button type="submit" className="btn">
          Filter
        </button>
        {target && (
          <button type="button" className="btn btn-ghost" onClick={() => apply('')}>
            Show all
          </button>
        )}
        {audit.isFetching && !audit.isPending && <Spinner label="Refreshing…" />}
      </form>
      <Card className="card-flush">
        {audit.isError ? (
          <ErrorBanner error={audit.error} title="Could not load the audit log" onRetry={() => void audit.refetch()} />
        ) : audit.isPending ? (
          <LoadingBlock label="Loading the audit log…" />
        ) : entries.length === 0 ? (
          <EmptyState title={target ? `No entries about “${target}”` : 'No admin actions yet'} />
        ) : (
          <>
            <AuditTable entries={entries} timeZone={timeZone} />
            {audit.hasNextPage && (
              <div className="card-foot">
                <button type="button" className="btn btn-small" onClick={() => void audit.fetchNextPage()} disabled={audit.isFetchingNextPage}>
                  {audit.isFetchingNextPage ? 'Loading…' : 'Older entries'}
                </button>
              </div>
            )}
          </>
        )}
      </Card>
    </div>
  );
}
