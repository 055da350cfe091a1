import { join } from 'node:path';
import { fail } from './errors';
import { isPostgresUrl, openPostgresStore } from './postgres';
import { openSqliteStore } from './sqlite';
import type { Store } from './types';

/** The SQLite file in the owner's data directory, when no PostgreSQL URL is given. */
export const DATABASE_FILE = 'sealed-edge.db';

/** Where the store is, as `--store` and SEALED_EDGE_DATABASE_URL give it: a postgres:// URL or a SQLite file. */
export function storeLocation(dataDir: string, flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  if (flag !== undefined) {
    if (flag === '') fail('E_INVALID', '--store must be a postgres:// URL or a SQLite file path, got an empty string');
    return flag;
  }
  const fromEnv = env.SEALED_EDGE_DATABASE_URL;
  if (fromEnv !== undefined && fromEnv !== '') {
    if (!isPostgresUrl(fromEnv)) fail('E_INVALID', 'SEALED_EDGE_DATABASE_URL must be a postgres:// or postgresql:// URL');
    return fromEnv;
  }
  return join(dataDir, DATABASE_FILE);
}

/** Opens the store at `location`: PostgreSQL for a postgres:// or postgresql:// URL, else the SQLite file at that path. */
export async function openStore(location: string): Promise<Store> {
  if (isPostgresUrl(location)) return openPostgresStore(location);
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(location);
  if (scheme) fail('E_INVALID', `a ${scheme[1]}:// database is not supported: give a postgres:// URL or a SQLite file path`);
  return openSqliteStore(location);
}
