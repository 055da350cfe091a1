import { describe, expect, it } from 'vitest';
import { HeContext, HeError, MAX_MODULUS_BITS, planParameters } from '../../src/he';
import { checkParameters } from '../../src/he/params';
import { nodeSeal } from '../../src/node/seal';

const bits = (chain: readonly number[]) => chain.reduce((a, b) => a + b, 0);

describe('planParameters', () => {
  it('depth 3: N=8192 at 128-bit, N=16384 at 192 and 256', () => {
    const p128 = planParameters({ scheme: 'ckks', security: 128, depth: 3, precisionBits: 25 });
    const p192 = planParameters({ scheme: 'ckks', security: 192, depth: 3, precisionBits: 25 });
    const p256 = planParameters({ scheme: 'ckks', security: 256, depth: 3, precisionBits: 25 });
    expect(p128.polyModulusDegree).toBe(8192);
    expect(p192.polyModulusDegree).toBe(16384);
    expect(p256.polyModulusDegree).toBe(16384);
    expect(p128.coeffModulusBits).toEqual([49, 35, 35, 35, 60]);
    expect(p128.scaleBits).toBe(35);
  });

  it('chooses the smallest ring degree within the bound at every level', () => {
    for (const security of [128, 192, 256] as const) {
      for (let depth = 0; depth <= 12; depth++) {
        const p = planParameters({ scheme: 'ckks', security, depth, precisionBits: 20 });
        expect(p.coeffModulusBits).toHaveLength(depth + 2);
        expect(bits(p.coeffModulusBits)).toBeLessThanOrEqual(MAX_MODULUS_BITS[security][p.polyModulusDegree]!);
        const smaller = p.polyModulusDegree / 2;
        if (smaller >= 1024) expect(bits(p.coeffModulusBits)).toBeGreaterThan(MAX_MODULUS_BITS[security][smaller]!);
      }
    }
  });

  it('last layer only (depth 1): N=8192 at 128 and 192-bit, 16384 at 256', () => {
    expect(planParameters({ scheme: 'ckks', security: 128, depth: 1, precisionBits: 25 }).polyModulusDegree).toBe(8192);
    expect(planParameters({ scheme: 'ckks', security: 192, depth: 1, precisionBits: 25 }).polyModulusDegree).toBe(8192);
    expect(planParameters({ scheme: 'ckks', security: 256, depth: 1, precisionBits: 25 }).polyModulusDegree).toBe(16384);
  });

  it('honours a minimum slot count', () => {
    const p = planParameters({ scheme: 'ckks', security: 128, depth: 1, precisionBits: 25, minSlots: 8192 });
    expect(p.polyModulusDegree).toBe(16384);
  });

  it('SEAL accepts every planned parameter set at its security level', async () => {
    const runtime = await nodeSeal();
    for (const security of [128, 192, 256] as const) {
      for (const depth of [1, 3, 6]) {
        const he = HeContext.create(runtime, planParameters({ scheme: 'ckks', security, depth, precisionBits: 25 }));
        expect(he.primes).toHaveLength(depth + 1);
        he.dispose();
      }
    }
  });

  it('says clearly when no parameters exist', () => {
    const err = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return e as HeError;
      }
      throw new Error('expected an error');
    };
    const deep = err(() => planParameters({ scheme: 'ckks', security: 256, depth: 40, precisionBits: 25 }));
    expect(deep).toBeInstanceOf(HeError);
    expect(deep.code).toBe('E_PARAMS');
    expect(deep.message).toMatch(/no parameters for depth 40.*256-bit.*N=32768 allows 476/);
    expect(err(() => planParameters({ scheme: 'ckks', security: 128, depth: 3, precisionBits: 55 })).code).toBe('E_PARAMS');
    expect(err(() => planParameters({ scheme: 'ckks', security: 100 as 128, depth: 3, precisionBits: 25 })).code).toBe('E_PARAMS');
    expect(err(() => planParameters({ scheme: 'ckks', security: 128, depth: -1, precisionBits: 25 })).code).toBe('E_PARAMS');
    expect(err(() => planParameters({ scheme: 'ckks', security: 128, depth: 1.5, precisionBits: 25 })).code).toBe('E_PARAMS');
    expect(err(() => planParameters({ scheme: 'bgv', security: 128, depth: 3, precisionBits: 25 })).code).toBe('E_UNSUPPORTED');
  });

  it('rejects parameters from a file that break the security bound or are malformed', () => {
    const good = planParameters({ scheme: 'ckks', security: 128, depth: 3, precisionBits: 25 });
    expect(checkParameters(JSON.parse(JSON.stringify(good)))).toEqual(good);
    expect(() => checkParameters({ ...good, coeffModulusBits: [60, 60, 60, 60, 60] })).toThrow(/security bound/);
    expect(() => checkParameters({ ...good, polyModulusDegree: 1000 })).toThrow(HeError);
    expect(() => checkParameters(null)).toThrow(HeError);
    expect(() => checkParameters({ ...good, depth: 7 })).toThrow(HeError);
  });
});
