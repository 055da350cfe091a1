import { benchCase, type HeCase } from './he';

// One benchmark case in its own process; prints its result row as JSON.
const spec = JSON.parse(process.argv[2] ?? '') as HeCase;
process.stdout.write(`${JSON.stringify(await benchCase(spec))}\n`);
