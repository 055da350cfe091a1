import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Copies of the site's mnist v1 bundle with one changed byte each, under models/<name>/. */
export function copyTamperedBundle(site: string): { name: string; expected: RegExp }[] {
  const cases = [
    { name: 'tampered-keys', file: 'keys.bin', expected: /refused.*keys\.bin/ },
    { name: 'tampered-weights', file: 'weights.bin', expected: /refused.*weights\.bin/ },
    { name: 'tampered-manifest', file: 'manifest.json', expected: /refused.*signature/ },
  ];
  for (const { name, file } of cases) {
    const dir = join(site, 'models', name, 'v1');
    cpSync(join(site, 'models', 'mnist', 'v1'), dir, { recursive: true });
    const bytes = readFileSync(join(dir, file));
    if (file === 'manifest.json') {
      // A swapped key id (still valid JSON): only the signature can tell.
      writeFileSync(join(dir, file), bytes.toString('utf8').replace(/"keyId": "([0-9a-f])/, (_, c: string) => `"keyId": "${c === 'a' ? 'b' : 'a'}`));
    } else {
      bytes[bytes.length >> 1]! ^= 0x01;
      writeFileSync(join(dir, file), bytes);
    }
    writeFileSync(join(site, 'models', name, 'latest.json'), JSON.stringify({ modelId: name, version: 1, path: 'v1/' }));
  }
  return cases.map(({ name, expected }) => ({ name, expected }));
}
