// Fails when src/generated/openapi.ts is not what openapi-typescript makes of ../../docs/openapi.json
// (the server's committed OpenAPI document). Fix with `npm run generate` and commit the result.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const committed = join(root, "src", "generated", "openapi.ts");
const dir = mkdtempSync(join(tmpdir(), "storecrm-sdk-gen-"));
const fresh = join(dir, "openapi.ts");
try {
  const cli = join(root, "node_modules", "openapi-typescript", "bin", "cli.js");
  const r = spawnSync(process.execPath, [cli, "../../docs/openapi.json", "--output", fresh], {
    cwd: root,
    encoding: "utf8",
  });
  if (r.status !== 0) {
    console.error(r.stdout, r.stderr);
    console.error("openapi-typescript failed on ../../docs/openapi.json");
    process.exit(1);
  }
  const want = readFileSync(fresh, "utf8");
  const have = readFileSync(committed, "utf8");
  if (want !== have) {
    const a = have.split("\n");
    const b = want.split("\n");
    let line = 0;
    while (line < a.length && line < b.length && a[line] === b[line]) line++;
    console.error(`src/generated/openapi.ts is out of date with docs/openapi.json (first difference at line ${line + 1}):`);
    console.error(`  committed: ${a[line] ?? "<end of file>"}`);
    console.error(`  generated: ${b[line] ?? "<end of file>"}`);
    console.error("run `npm run generate` in sdk/typescript and commit the result");
    process.exit(1);
  }
  console.log("src/generated/openapi.ts matches docs/openapi.json");
} finally {
  rmSync(dir, { recursive: true, force: true });
}
