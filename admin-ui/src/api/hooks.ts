// TanStack Query hooks: every view refreshes itself (refetchInterval) so that the numbers stay
// current without a page load; actions refresh what they change.

import {
  keepPreviousData,
  type InfiniteData,
  type QueryClient,
  useInfiniteQuery,
  useMutation,
  useQuery,
  useQueryClient,
} from '@tanstack/react-query';
import { api, type UsersParams } from './client';
import type { ControlsChange, LimitsRequest, UserUsage, UsersPage, UserView } from './types';

/** How often open views refetch. */
export const REFRESH_MS = 20_000;

export const keys = {
  me: ['me'] as const,
  stats: ['stats'] as const,
  series: (days: number, by: string, user?: string) => ['series', days, by, user ?? null] as const,
  users: (p: UsersParams) => ['users', p] as const,
  userUsage: (id: string, days: number) => ['user', id, days] as const,
  audit: (target?: string) => ['audit', target ?? null] as const,
  alerts: ['alerts', 'list'] as const,
  alertCount: ['alerts', 'count'] as const,
  config: ['config'] as const,
  plans: ['plans'] as const,
};

export function useStats() {
  return useQuery({
    queryKey: keys.stats,
    queryFn: ({ signal }) => api.stats(signal),
    refetchInterval: REFRESH_MS,
  });
}

/** The gateway's time zone (`limits.timezone`), in which days and times are shown. */
export function useTimeZone(): string {
  const stats = useStats();
  return stats.data?.timezone ?? 'UTC';
}

export function useSeries(days: number, by: 'model' | 'provider' = 'model', user?: string) {
  return useQuery({
    queryKey: keys.series(days, by, user),
    queryFn: ({ signal }) => api.series(days, by, user, signal),
    refetchInterval: REFRESH_MS,
    placeholderData: keepPreviousData,
  });
}

export function useUsers(p: UsersParams) {
  return useQuery({
    queryKey: keys.users(p),
    queryFn: ({ signal }) => api.users(p, signal),
    refetchInterval: REFRESH_MS,
    placeholderData: keepPreviousData,
  });
}

const CALLS_PAGE = 25;

/** One user's usage; further pages add older calls (cursor). */
export function useUserUsage(id: string, days: number) {
  return useInfiniteQuery({
    queryKey: keys.userUsage(id, days),
    queryFn: ({ pageParam, signal }) => api.userUsage(id, days, pageParam, CALLS_PAGE, signal),
    initialPageParam: null as number | null,
    getNextPageParam: (last) => last.next_cursor ?? undefined,
    refetchInterval: REFRESH_MS,
    placeholderData: keepPreviousData,
  });
}

export function useAudit(target?: string, limit = 50) {
  return useInfiniteQuery({
    queryKey: [...keys.audit(target), limit],
    queryFn: ({ pageParam, signal }) => api.audit(target, pageParam, limit, signal),
    initialPageParam: null as number | null,
    getNextPageParam: (last) => last.next_cursor ?? undefined,
    refetchInterval: REFRESH_MS,
  });
}

/** The alerts the rules fired, newest first; further pages add older ones (cursor). */
export function useAlerts(limit = 50) {
  return useInfiniteQuery({
    queryKey: [...keys.alerts, limit],
    queryFn: ({ pageParam, signal }) => api.alerts(pageParam, limit, signal),
    initialPageParam: null as number | null,
    getNextPageParam: (last) => last.next_cursor ?? undefined,
    refetchInterval: REFRESH_MS,
  });
}

/** Alerts fired in the last 24 hours (the navigation's badge): one row asked for, the count read. */
export function useAlertCount() {
  return useQuery({
    queryKey: keys.alertCount,
    queryFn: ({ signal }) => api.alerts(null, 1, signal),
    select: (page) => page.last_24h,
    refetchInterval: REFRESH_MS,
  });
}

export function useConfig() {
  return useQuery({
    queryKey: keys.config,
    queryFn: ({ signal }) => api.config(signal),
    staleTime: 60_000,
    refetchInterval: 60_000,
  });
}

/** The plans in force (`[plans.NAME]`, `limits.default_plan`, `auth.plan_claim`). */
export function usePlans() {
  return useQuery({
    queryKey: keys.plans,
    queryFn: ({ signal }) => api.plans(signal),
    staleTime: 60_000,
    refetchInterval: 60_000,
  });
}

/** A user as the answer of an action leaves them: controls, limits in force and their sources. */
function changed(u: UserView, change: ControlsChange): UserView {
  if (u.id !== change.user) return u;
  return {
    ...u,
    blocked: change.after.blocked,
    blocked_reason: change.after.blocked_reason,
    overrides: change.after.overrides,
    limits: change.limits,
    limit_sources: change.limit_sources,
  };
}

/** Show an action's answer at once in the cached users and the user's page (the refetch that
 * follows brings the rest). */
export function applyControlsChange(qc: QueryClient, change: ControlsChange) {
  qc.setQueriesData<UsersPage>({ queryKey: ['users'] }, (page) =>
    page ? { ...page, users: page.users.map((u) => changed(u, change)) } : page,
  );
  qc.setQueriesData<InfiniteData<UserUsage>>({ queryKey: ['user', change.user] }, (data) =>
    data ? { ...data, pages: data.pages.map((p) => ({ ...p, user: changed(p.user, change) })) } : data,
  );
}

/** After an action on a user: its answer shown, and everything that shows users or the audit
 * trail is stale. */
function useInvalidateUser() {
  const qc = useQueryClient();
  return (id: string, change?: ControlsChange) => {
    if (change) applyControlsChange(qc, change);
    return Promise.all([
      qc.invalidateQueries({ queryKey: ['users'] }),
      qc.invalidateQueries({ queryKey: ['user', id] }),
      qc.invalidateQueries({ queryKey: ['stats'] }),
      qc.invalidateQueries({ queryKey: ['audit'] }),
    ]);
  };
}

export function useBlock() {
  const invalidate = useInvalidateUser();
  return useMutation({
    mutationFn: ({ id, reason }: { id: string; reason: string }) => api.block(id, reason),
    onSuccess: (d, v) => invalidate(v.id, d),
  });
}

export function useUnblock() {
  const invalidate = useInvalidateUser();
  return useMutation({
    mutationFn: ({ id }: { id: string }) => api.unblock(id),
    onSuccess: (d, v) => invalidate(v.id, d),
  });
}

export function useSetLimits() {
  const invalidate = useInvalidateUser();
  return useMutation({
    mutationFn: ({ id, body }: { id: string; body: LimitsRequest }) => api.setLimits(id, body),
    onSuccess: (d, v) => invalidate(v.id, d),
  });
}
