// The actions on a user: block (with a reason, confirmed), unblock (confirmed), and the limits
// editor (a field left empty goes back to the user's plan, or the [limits] default).

import { useState, type FormEvent } from 'react';
import { useBlock, usePlans, useSetLimits, useUnblock } from '../api/hooks';
import type { LimitsRequest, LimitsView, UserOverrides, UserView } from '../api/types';
import { nanoToUsd } from '../lib/format';
import { baselineFor, LIMIT_ROWS, sourceText, type LimitsBaseline } from './Limits';
import { Modal } from './Modal';
import { errorMessage } from './ui';

const MAX_REASON = 500;

export function BlockDialog({ user, onClose, onDone }: { user: Pick<UserView, 'id'>; onClose: () => void; onDone?: () => void }) {
  const block = useBlock();
  const [reason, setReason] = useState('');
  const [touched, setTouched] = useState(false);
  const trimmed = reason.trim();
  const invalid = trimmed.length === 0 ? 'Say why: the reason goes into the audit log.' : trimmed.length > MAX_REASON ? `At most ${MAX_REASON} characters.` : null;

  const submit = (e: FormEvent) => {
    e.preventDefault();
    setTouched(true);
    if (invalid) return;
    block.mutate(
      { id: user.id, reason: trimmed },
      {
        onSuccess: () => {
          onDone?.();
          onClose();
        },
      },
    );
  };

  return (
    <Modal title={`Block ${user.id}?`} onClose={onClose} busy={block.isPending} tone="danger">
      <form onSubmit={submit} noValidate>
        <p>
          Their next call through Tollgate is refused with <strong>403</strong> until you unblock them. Calls already in flight finish.
        </p>
        <label className="field">
          <span>Reason (for the audit log, not shown to the user)</span>
          <textarea
            name="reason"
            rows={3}
            maxLength={MAX_REASON + 50}
            value={reason}
            onChange={(e) => setReason(e.target.value)}
            aria-invalid={touched && !!invalid}
            aria-describedby="block-reason-error"
            data-autofocus
            required
          />
        </label>
        <p id="block-reason-error" className="field-error" aria-live="polite">
          {touched && invalid ? invalid : ''}
        </p>
        {block.isError && (
          <div className="banner banner-error" role="alert">
            Blocking failed: {errorMessage(block.error)}
          </div>
        )}
        <div className="modal-actions">
          <button type="button" className="btn" onClick={onClose} disabled={block.isPending}>
            Cancel
          </button>
          <button type="submit" className="btn btn-danger" disabled={block.isPending}>
            {block.isPending ? 'Blocking…' : `Block ${user.id}`}
          </button>
        </div>
      </form>
    </Modal>
  );
}

export function UnblockDialog({ user, onClose }: { user: Pick<UserView, 'id' | 'blocked_reason'>; onClose: () => void }) {
  const unblock = useUnblock();
  return (
    <Modal title={`Unblock ${user.id}?`} onClose={onClose} busy={unblock.isPending}>
      <p>Their calls go through again from the next one on.</p>
      {user.blocked_reason && (
        <p className="muted">
          Blocked because: <q>{user.blocked_reason}</q>
        </p>
      )}
      {unblock.isError && (
        <div className="banner banner-error" role="alert">
          Unblocking failed: {errorMessage(unblock.error)}
        </div>
      )}
      <div className="modal-actions">
        <button type="button" className="btn" onClick={onClose} disabled={unblock.isPending}>
          Cancel
        </button>
        <button
          type="button"
          className="btn btn-primary"
          disabled={unblock.isPending}
          data-autofocus
          onClick={() => unblock.mutate({ id: user.id }, { onSuccess: onClose })}
        >
          {unblock.isPending ? 'Unblocking…' : `Unblock ${user.id}`}
        </button>
      </div>
    </Modal>
  );
}

type FieldKey = keyof LimitsRequest;

interface FieldSpec {
  key: FieldKey;
  label: string;
  kind: 'int' | 'usd';
  min: number;
  /** The user's override, as the form shows it ('' = none). */
  current: (o: UserOverrides) => string;
  /** The limit in force without an override (`LimitsView`'s key). */
  view: keyof LimitsView;
}

const intOrEmpty = (v: number | null) => (v === null || v === undefined ? '' : String(v));
const usdOrEmpty = (v: number | null) =>
  v === null || v === undefined ? '' : nanoToUsd(v).toFixed(9).replace(/\.?0+$/, '');

export const LIMIT_FIELDS: FieldSpec[] = [
  { key: 'daily_tokens', label: 'Tokens per day', kind: 'int', min: 0, current: (o) => intOrEmpty(o.daily_tokens), view: 'daily_tokens' },
  { key: 'monthly_tokens', label: 'Tokens per month', kind: 'int', min: 0, current: (o) => intOrEmpty(o.monthly_tokens), view: 'monthly_tokens' },
  {
    key: 'daily_cost_usd',
    label: 'Cost per day (USD)',
    kind: 'usd',
    min: 0,
    current: (o) => usdOrEmpty(o.daily_cost_nano_usd),
    view: 'daily_cost_nano_usd',
  },
  {
    key: 'monthly_cost_usd',
    label: 'Cost per month (USD)',
    kind: 'usd',
    min: 0,
    current: (o) => usdOrEmpty(o.monthly_cost_nano_usd),
    view: 'monthly_cost_nano_usd',
  },
  {
    key: 'requests_per_minute',
    label: 'Requests per minute',
    kind: 'int',
    min: 1,
    current: (o) => intOrEmpty(o.requests_per_minute),
    view: 'requests_per_minute',
  },
  { key: 'max_concurrent', label: 'Calls at once', kind: 'int', min: 1, current: (o) => intOrEmpty(o.max_concurrent), view: 'max_concurrent' },
];

/** What applies without an override, as a placeholder ("100,000", "no budget"); '—' unknown. */
function fallback(spec: FieldSpec, b: LimitsBaseline | undefined): string {
  if (!b) return '—';
  const row = LIMIT_ROWS.find((r) => r.key === spec.view)!;
  return row.format(b.limits[spec.view]);
}

/** Where that comes from: "plan pro" or "[limits]". */
function fallbackFrom(spec: FieldSpec, b: LimitsBaseline | undefined): string | null {
  return b ? sourceText(b.sources[spec.view], b.plan) : null;
}

/** Parse a field: null for empty (= default), a number, or an error sentence. */
export function parseLimit(raw: string, spec: Pick<FieldSpec, 'kind' | 'min'>): { value: number | null } | { error: string } {
  const s = raw.trim().replace(/[,_\s]/g, '').replace(/^\$/, '');
  if (s === '') return { value: null };
  if (spec.kind === 'int') {
    if (!/^\d+$/.test(s)) return { error: 'A whole number, or empty for the default.' };
    const n = Number(s);
    if (!Number.isSafeInteger(n)) return { error: 'Too large.' };
    if (n < spec.min) return { error: `At least ${spec.min}.` };
    return { value: n };
  }
  if (!/^\d+(\.\d+)?$|^\.\d+$/.test(s)) return { error: 'An amount in USD (e.g. 2.50), or empty for no override.' };
  const n = Number(s);
  if (!Number.isFinite(n) || n < spec.min) return { error: 'A non-negative amount.' };
  if (n > 1e9) return { error: 'Too large.' };
  return { value: n };
}

/** What to send: only the fields that changed; an emptied field is null (back to the default). */
export function limitsPatch(initial: Record<FieldKey, string>, values: Record<FieldKey, string>): LimitsRequest | { errors: Partial<Record<FieldKey, string>> } {
  const body: LimitsRequest = {};
  const errors: Partial<Record<FieldKey, string>> = {};
  for (const spec of LIMIT_FIELDS) {
    const parsed = parseLimit(values[spec.key], spec);
    if ('error' in parsed) {
      errors[spec.key] = parsed.error;
      continue;
    }
    const before = parseLimit(initial[spec.key], spec);
    const beforeValue = 'value' in before ? before.value : null;
    if (parsed.value !== beforeValue) body[spec.key] = parsed.value;
  }
  return Object.keys(errors).length ? { errors } : body;
}

/** Under a field: where the limit comes from as the form stands. */
function hint(spec: FieldSpec, own: boolean, b: LimitsBaseline | undefined): string {
  const from = fallbackFrom(spec, b);
  if (!own) return from ? `From ${from}` : 'The default';
  return from ? `Own limit (without it: ${fallback(spec, b)} from ${from})` : 'Own limit';
}

export function LimitsDialog({
  user,
  baseline,
  onClose,
}: {
  user: Pick<UserView, 'id' | 'overrides'>;
  /** What applies without the user's overrides (their plan's limits, or [limits]). */
  baseline: LimitsBaseline | undefined;
  onClose: () => void;
}) {
  const setLimits = useSetLimits();
  const initial = Object.fromEntries(LIMIT_FIELDS.map((f) => [f.key, f.current(user.overrides)])) as Record<FieldKey, string>;
  const [values, setValues] = useState(initial);
  const [errors, setErrors] = useState<Partial<Record<FieldKey, string>>>({});
  const [nothing, setNothing] = useState(false);

  const submit = (e: FormEvent) => {
    e.preventDefault();
    const patch = limitsPatch(initial, values);
    if ('errors' in patch) {
      setErrors(patch.errors);
      return;
    }
    setErrors({});
    if (Object.keys(patch).length === 0) {
      setNothing(true);
      return;
    }
    setLimits.mutate({ id: user.id, body: patch }, { onSuccess: onClose });
  };

  const anySet = LIMIT_FIELDS.some((f) => values[f.key].trim() !== '');

  return (
    <Modal title={`Limits for ${user.id}`} onClose={onClose} busy={setLimits.isPending}>
      <form onSubmit={submit} noValidate className="limits-form">
        <p className="muted">
          {baseline?.plan ? (
            <>
              Leave a field empty to follow the user's plan (<code>[plans.{baseline.plan}]</code>), or <code>[limits]</code> where the plan
              sets nothing.
            </>
          ) : (
            <>
              Leave a field empty to follow the gateway's default (<code>[limits]</code> in gateway.toml).
            </>
          )}{' '}
          Changes apply from the user's next call.
        </p>
        <div className="limits-grid">
          {LIMIT_FIELDS.map((f) => {
            const id = `limit-${f.key}`;
            return (
              <div className="field" key={f.key}>
                <label htmlFor={id}>{f.label}</label>
                <div className="input-row">
                  <input
                    id={id}
                    name={f.key}
                    inputMode={f.kind === 'usd' ? 'decimal' : 'numeric'}
                    autoComplete="off"
                    placeholder={fallback(f, baseline)}
                    value={values[f.key]}
                    aria-invalid={!!errors[f.key]}
                    aria-describedby={`${id}-hint`}
                    onChange={(e) => {
                      setNothing(false);
                      setValues((v) => ({ ...v, [f.key]: e.target.value }));
                    }}
                  />
                  {values[f.key] !== '' && (
                    <button
                      type="button"
                      className="btn btn-small btn-ghost"
                      aria-label={`Use the default for ${f.label.toLowerCase()}`}
                      onClick={() => setValues((v) => ({ ...v, [f.key]: '' }))}
                    >
                      Default
                    </button>
                  )}
                </div>
                <span id={`${id}-hint`} className={errors[f.key] ? 'field-error' : 'field-hint'}>
                  {errors[f.key] ?? hint(f, values[f.key] !== '', baseline)}
                </span>
              </div>
            );
          })}
        </div>
        {nothing && (
          <p className="field-hint" role="status">
            Nothing changed.
          </p>
        )}
        {setLimits.isError && (
          <div className="banner banner-error" role="alert">
            Saving failed: {errorMessage(setLimits.error)}
          </div>
        )}
        <div className="modal-actions">
          <button
            type="button"
            className="btn btn-ghost"
            disabled={!anySet || setLimits.isPending}
            onClick={() => setValues(Object.fromEntries(LIMIT_FIELDS.map((f) => [f.key, ''])) as Record<FieldKey, string>)}
          >
            Clear all
          </button>
          <span className="spacer" />
          <button type="button" className="btn" onClick={onClose} disabled={setLimits.isPending}>
            Cancel
          </button>
          <button type="submit" className="btn btn-primary" disabled={setLimits.isPending}>
            {setLimits.isPending ? 'Saving…' : 'Save limits'}
          </button>
        </div>
      </form>
    </Modal>
  );
}

/** Which dialog is open for which user. */
export type UserDialog =
  | { kind: 'block'; user: UserView }
  | { kind: 'unblock'; user: UserView }
  | { kind: 'limits'; user: UserView }
  | null;

export function UserDialogs({ dialog, onClose }: { dialog: UserDialog; onClose: () => void }) {
  if (!dialog) return null;
  if (dialog.kind === 'block') return <BlockDialog user={dialog.user} onClose={onClose} />;
  if (dialog.kind === 'unblock') return <UnblockDialog user={dialog.user} onClose={onClose} />;
  return <UserLimitsDialog user={dialog.user} onClose={onClose} />;
}

/** The limits editor with what the user's plan (or [limits]) gives them without overrides. */
function UserLimitsDialog({ user, onClose }: { user: UserView; onClose: () => void }) {
  const plans = usePlans();
  return <LimitsDialog user={user} baseline={baselineFor(plans.data, user.plan)} onClose={onClose} />;
}
