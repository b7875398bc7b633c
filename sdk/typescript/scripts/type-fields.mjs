#!/usr/bin/env node
// Prints the property names of every interface declared in a TypeScript file, as JSON:
//
//   node scripts/type-fields.mjs [src/types.ts]   ->   {"VM": ["cpu", "created_at", ...], ...}
//
// Inherited properties are included (`interface CreatedApiToken extends ApiToken`); index
// signatures are not. Uses the TypeScript compiler API from this package's devDependencies; the
// server's tests (tests/unit/test_sdk_type_drift.py) compare the output with the OpenAPI document.
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const require = createRequire(resolve(root, 'package.json'));
const ts = require('typescript');

const file = resolve(root, process.argv[2] ?? 'src/types.ts');
const program = ts.createProgram([file], {
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
  strict: true,
  noEmit: true,
  skipLibCheck: true,
});
const source = program.getSourceFile(file);
if (!source) {
  console.error(`type-fields: cannot read ${file}`);
  process.exit(2);
}
const problems = ts.getPreEmitDiagnostics(program, source).filter((d) => d.category === ts.DiagnosticCategory.Error);
if (problems.length) {
  console.error(ts.formatDiagnostics(problems, ts.createCompilerHost({})));
  process.exit(1);
}
const checker = program.getTypeChecker();

const result = {};
for (const statement of source.statements) {
  if (!ts.isInterfaceDeclaration(statement)) continue;
  const symbol = checker.getSymbolAtLocation(statement.name);
  if (!symbol) continue;
  const type = checker.getDeclaredTypeOfSymbol(symbol);
  result[statement.name.text] = checker
    .getPropertiesOfType(type)
    .map((p) => p.getName())
    .sort();
}
process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
