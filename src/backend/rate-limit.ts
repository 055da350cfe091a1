import type { Store } from '../store/types';

/** A per-device token bucket: `burst` requests at once, refilled at `perSecond`. */
export interface RateLimitOptions {
  burst: number;
  perSecond: number;
}

/**
 * Where the per-device buckets live:
 * - 'store': in the database (Store.takeRateToken), one bucket per device for every
 *   instance sharing it, so a device behind a load balancer gets `perSecond` whichever
 *   instances its requests land on. It costs one single-statement upsert per request (an
 *   UNLOGGED table on PostgreSQL: no WAL record), made after the signature is checked, so
 *   only enrolled devices' signed requests reach it.
 * - 'instance': in this process's memory: exact for one instance, and free. With N
 *   instances behind a balancer it would let a device through N times over, which is why
 *   it is the default only on SQLite, where the database serves one instance.
 */
export type RateLimitScope = 'store' | 'instance';

export interface RateLimiter {
  readonly scope: RateLimitScope;
  /** Takes a token from the device's bucket: false when the device must wait. */
  allow(deviceId: string): Promise<boolean>;
}

/** The default scope for a store: shared buckets on PostgreSQL (several instances), in memory on SQLite (one). */
export function defaultRateLimitScope(store: Store): RateLimitScope {
  return store.engineName === 'postgres' ? 'store' : 'instance';
}

export function checkRateLimit(rate: RateLimitOptions): RateLimitOptions {
  const ok = (v: unknown, min: number) => typeof v === 'number' && Number.isFinite(v) && v >= min && v <= 1e9;
  if (rate === null || typeof rate !== 'object' || !ok(rate.burst, 1) || !ok(rate.perSecond, Number.MIN_VALUE)) {
    throw new RangeError(`rateLimit needs burst ≥ 1 and perSecond > 0 (finite, at most 1e9), got ${JSON.stringify(rate)}`);
  }
  return { burst: rate.burst, perSecond: rate.perSecond };
}

export function rateLimiter(scope: RateLimitScope, store: Store, rate: RateLimitOptions, now: () => number): RateLimiter {
  if (scope === 'store') {
    return { scope, allow: (deviceId) => store.takeRateToken(deviceId, { ...rate, nowMs: Math.max(0, Math.floor(now())) }) };
  }
  if (scope !== 'instance') throw new RangeError(`rateLimitScope must be 'store' or 'instance', got ${JSON.stringify(scope)}`);
  const buckets = new Map<string, { tokens: number; at: number }>();
  return {
    scope,
    allow: async (deviceId) => {
      const at = now();
      const bucket = buckets.get(deviceId) ?? { tokens: rate.burst, at };
      bucket.tokens = Math.min(rate.burst, bucket.tokens + (Math.max(0, at - bucket.at) / 1000) * rate.perSecond);
      bucket.at = Math.max(bucket.at, at);
      buckets.set(deviceId, bucket);
      if (bucket.tokens < 1) return false;
      bucket.tokens -= 1;
      return true;
    },
  };
}
