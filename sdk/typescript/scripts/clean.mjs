// Removes build output before a build, so a deleted source file leaves no stale .js behind.
import { rmSync } from "node:fs";
for (const dir of process.argv.slice(2).length > 0 ? process.argv.slice(2) : ["dist"]) {
  rmSync(new URL(`../${dir}`, import.meta.url), { recursive: true, force: true });
}
