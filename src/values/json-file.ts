import * as fs from 'node:fs';
import { InputError } from './errors';

/** Read and parse a JSON file named by `flag`; unreadable or invalid JSON names the flag and path. */
export function readJsonFile(flag: string, path: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(path, 'utf8');
  } catch (e) {
    throw new InputError(flag, path, `cannot read: ${(e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new InputError(flag, path, `not valid JSON: ${(e as Error).message}`);
  }
}
