// Marks dist/cjs as CommonJS (the package itself is "type": "module").
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const target = fileURLToPath(new URL('../dist/cjs/package.json', import.meta.url));
writeFileSync(target, JSON.stringify({ type: 'commonjs' }, null, 2) + '\n');
