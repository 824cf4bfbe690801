// One newman run of the Postman collection, through newman's Node API, that also carries the
// collection variables the scripts set (tokens, ids) from one run to the next: newman's CLI
// exports the collection as it was loaded, without them. check.sh runs the collection in two
// such runs with the sign-in code, read from the mail folder, in between (the one manual step).
//
//   node newman-run.mjs --collection C [--folder NAME]... [--env-var K=V]... \
//        [--vars-in FILE] [--vars-out FILE] [--junit FILE]
//
// Exit status 1 when any request or assertion failed.

import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';

const toolsDir = path.resolve(process.env.API_TOOLS_DIR || path.join(path.dirname(new URL(import.meta.url).pathname), '../../target/api-tools'));
const require = createRequire(path.join(toolsDir, 'package.json'));
const newman = require('newman');

const { values: args } = parseArgs({
  options: {
    collection: { type: 'string' },
    folder: { type: 'string', multiple: true, default: [] },
    'env-var': { type: 'string', multiple: true, default: [] },
    'vars-in': { type: 'string' },
    'vars-out': { type: 'string' },
    junit: { type: 'string' },
  },
});

const collection = JSON.parse(fs.readFileSync(args.collection, 'utf8'));
if (args['vars-in']) {
  const given = JSON.parse(fs.readFileSync(args['vars-in'], 'utf8'));
  for (const v of collection.variable) if (v.key in given) v.value = given[v.key];
}
const envVar = args['env-var'].map((kv) => {
  const i = kv.indexOf('=');
  return { key: kv.slice(0, i), value: kv.slice(i + 1) };
});

let variables = Object.fromEntries(collection.variable.map((v) => [v.key, v.value]));
const reporters = ['cli'];
const reporter = {};
if (args.junit) {
  reporters.push('junit');
  reporter.junit = { export: args.junit };
}

newman
  .run(
    {
      collection,
      folder: args.folder.length ? args.folder : undefined,
      envVar,
      reporters,
      reporter,
      color: 'off',
      disableUnicode: true,
      timeoutRequest: 30000,
    },
    (err, summary) => {
      if (args['vars-out']) fs.writeFileSync(args['vars-out'], JSON.stringify(variables, null, 2));
      if (err) {
        console.error(err);
        process.exit(1);
      }
      const failures = summary.run.failures.length;
      const requests = summary.run.stats.requests.total;
      const assertions = summary.run.stats.assertions;
      console.log(`newman: ${requests} requests, ${assertions.total - assertions.failed} passed, ${assertions.failed} failed assertions`);
      process.exit(failures || requests === 0 ? 1 : 0);
    },
  )
  .on('script', (err, o) => {
    const scope = o && o.execution && o.execution.collectionVariables;
    if (scope && typeof scope.toObject === 'function') variables = { ...variables, ...scope.toObject() };
  });
