import { describe, expect, it } from 'vitest';
import { openClassifier } from '../../src/he';

/** A stand-in for a context, key set or classifier that records when it is freed. */
function part(name: string, freed: string[]) {
  return { name, dispose: () => freed.push(name) };
}

describe('openClassifier', () => {
  it('opens context, keys and classifier in turn; dispose frees them in reverse order, once', () => {
    const freed: string[] = [];
    const opened = openClassifier(
      () => part('context', freed),
      (context) => part(`keys of ${context.name}`, freed),
      (context, keys) => part(`classifier of ${context.name} with ${keys.name}`, freed),
    );
    expect(opened.classifier.name).toBe('classifier of context with keys of context');
    expect(opened.contextMs).toBeGreaterThanOrEqual(0);
    expect(opened.keysMs).toBeGreaterThanOrEqual(0);
    expect(freed).toEqual([]);
    opened.dispose();
    opened.dispose();
    expect(freed).toEqual(['classifier of context with keys of context', 'keys of context', 'context']);
  });

  it('a step that fails frees what the steps before it opened, and the error reaches the caller', () => {
    const freed: string[] = [];
    const failing = (message: string) => () => {
      throw new Error(message);
    };
    expect(() => openClassifier(() => part('context', freed), failing('bad keys'), () => part('classifier', freed))).toThrow('bad keys');
    expect(freed).toEqual(['context']);
    freed.length = 0;
    expect(() => openClassifier(() => part('context', freed), () => part('keys', freed), failing('bad weights'))).toThrow('bad weights');
    expect(freed).toEqual(['keys', 'context']);
  });
});
