import { crc32 as zlibCrc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { crc32 } from '../../src/he/crc32';
import { rng } from './helpers';

describe('crc32', () => {
  it('is CRC-32 (IEEE): the check value, and zlib’s CRC on every length and alignment around the 8-byte steps', () => {
    expect(crc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926);
    expect(crc32(new Uint8Array(0))).toBe(0);
    const next = rng(5);
    const bytes = Uint8Array.from({ length: 4096 }, () => Math.floor(next() * 256));
    for (const length of [1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 4093]) {
      for (const offset of [0, 1, 3]) {
        const view = bytes.subarray(offset, offset + length);
        expect(crc32(view), `${length} bytes at ${offset}`).toBe(zlibCrc32(view));
      }
    }
  });
});
