// Key wrapping lives in src/node/kek.ts, below both protect and backend; bench/ imports unwrapSecret from here.
export { unwrapSecret } from '../node/kek';
