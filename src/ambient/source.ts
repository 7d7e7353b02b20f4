// Reads the flat JSON file `rules --ambient pod|host --config FILE` takes into typed inputs.
import * as fs from 'node:fs';
import { InputError } from '../values/errors';
import { AmbientRuleSet, AmbientRulesInput, parseAmbientRulesObject } from './config';

export function readAmbientRulesFile(ruleSet: AmbientRuleSet, path: string): AmbientRulesInput {
  let text: string;
  try {
    text = fs.readFileSync(path, 'utf8');
  } catch (e) {
    throw new InputError('--config', path, `cannot read: ${(e as Error).message}`);
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw new InputError('--config', path, `not valid JSON: ${(e as Error).message}`);
  }
  return parseAmbientRulesObject(ruleSet, obj, (k) => `config key "${k}" in ${path}`, `--config ${path}`);
}
