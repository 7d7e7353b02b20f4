// Reads the flat JSON file `rules --ambient pod|host --config FILE` takes into typed inputs.
import { readJsonFile } from '../values/json-file';
import { AmbientRuleSet, AmbientRulesInput, parseAmbientRulesObject } from './config';

export function readAmbientRulesFile(ruleSet: AmbientRuleSet, path: string): AmbientRulesInput {
  const obj = readJsonFile('--config', path);
  return parseAmbientRulesObject(ruleSet, obj, (k) => `config key "${k}" in ${path}`, `--config ${path}`);
}
