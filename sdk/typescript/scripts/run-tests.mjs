// Compiles the tests (test/*.ts → build-test/) and runs them with Node's test runner against the
// built package (dist/, through the package's own name). Arguments are test-name filters
// (`node scripts/run-tests.mjs refresh` runs build-test/test/refresh.test.js only).
import { spawnSync } from "node:child_process";
import { readdirSync, rmSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { join } from "node:path";

const root = fileURLToPath(new URL("..", import.meta.url));
const run = (cmd, args) => {
  const r = spawnSync(cmd, args, { cwd: root, stdio: "inherit" });
  if (r.error) throw r.error;
  return r.status ?? 1;
};

rmSync(join(root, "build-test"), { recursive: true, force: true });
const tsc = join(root, "node_modules", "typescript", "bin", "tsc");
if (run(process.execPath, [tsc, "-p", "tsconfig.test.json"]) !== 0) process.exit(1);

const filters = process.argv.slice(2);
const dir = join(root, "build-test", "test");
const files = readdirSync(dir)
  .filter((f) => f.endsWith(".test.js"))
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .sort()
  .map((f) => join("build-test", "test", f));
if (files.length === 0) {
  console.error(`no test file matches ${filters.join(", ")}`);
  process.exit(1);
}
const concurrency = process.env.SDK_TEST_CONCURRENCY ?? "3";
process.exit(
  run(process.execPath, ["--enable-source-maps", "--test", "--test-reporter=spec", `--test-concurrency=${concurrency}`, ...files]),
);
