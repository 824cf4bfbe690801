"""The API-document checks; run by scripts/api/check.sh with the tools it installed.

Per backend (SQLite always, Postgres when TEST_DATABASE_URL is set), on a fresh server:
  1. the served document (`GET /openapi.json`) is validated with openapi-spec-validator and
     `redocly lint` (rules in redocly.yaml; errors fail, warnings are listed) - once, on the
     first backend, since the document does not depend on the database;
  2. schemathesis runs every check in every phase, once per principal (API key, account token,
     verified profile token); any failure fails the script;
  3. the Postman collection is generated from the served document and run with newman.
The committed collection (postman/) must equal the generated one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
import harness  # noqa: E402
from harness import log  # noqa: E402

PRINCIPALS = ("api_key", "account", "profile")
COLLECTION = ROOT / "postman" / "storecrm.postman_collection.json"


class Results:
    def __init__(self):
        self.rows: list[tuple[str, str, str, float]] = []
        self.details: list[str] = []

    def add(self, stage: str, ok: bool, detail: str, seconds: float):
        self.rows.append((stage, "ok" if ok else "FAILED", detail, seconds))
        log(f"{stage}: {'ok' if ok else 'FAILED'} {detail} ({seconds:.0f}s)")

    @property
    def failed(self) -> bool:
        return any(r[1] != "ok" for r in self.rows)

    def print(self):
        if self.details:
            print("\n== distinct failures (operation | check | status and error codes, then a reproducing request)")
            for line in self.details:
                print(line)
        print("\n== API checks summary", flush=True)
        for stage, status, detail, secs in self.rows:
            print(f"  {status:7} {stage:42} {secs:6.0f}s  {detail}")
        passed = sum(1 for r in self.rows if r[1] == "ok")
        print(f"api-checks: {passed} passed, {len(self.rows) - passed} failed", flush=True)


def run(cmd: list[str], log_path: Path, env: dict | None = None, cwd: Path | None = None) -> int:
    """Runs a tool, its output both shown and kept in log_path."""
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                stdin=subprocess.DEVNULL)
        for line in proc.stdout:
            out.write(line)
            if not line.startswith(("    ╔", "    ║", "    ╚")):  # redocly's Node 20 banner
                sys.stdout.write(line)
        return proc.wait()


def validate_document(args, base_url: str, work: Path, results: Results) -> None:
    t = time.monotonic()
    status, doc = harness.http("GET", base_url + "/openapi.json")
    path = work / "openapi.json"
    path.write_text(json.dumps(doc, indent=2))
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text())
    if doc != committed:
        log("note: the served document differs from the committed docs/openapi.json")

    from openapi_spec_validator import validate
    from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

    try:
        if status != 200:
            raise RuntimeError(f"GET /openapi.json answered {status}")
        validate(doc)
        results.add("openapi-spec-validator", True, "valid OpenAPI 3.1", time.monotonic() - t)
    except (OpenAPIValidationError, RuntimeError) as e:
        results.add("openapi-spec-validator", False, str(e).splitlines()[0], time.monotonic() - t)

    t = time.monotonic()
    rc = run([str(args.node_bin / "redocly"), "lint", str(path), "--config", str(ROOT / "redocly.yaml"),
              "--format", "stylish"], work / "redocly.log")
    text = (work / "redocly.log").read_text()
    warnings = text.count(" warning ")
    results.add("redocly lint", rc == 0, f"0 errors, {warnings} warnings (see redocly.yaml)" if rc == 0
                else "errors: see above", time.monotonic() - t)


def schemathesis(args, backend: str, p: harness.Principals, work: Path, results: Results) -> None:
    for principal in PRINCIPALS:
        t = time.monotonic()
        env = dict(os.environ)
        env.update(
            SC_HOOKS=str(HERE / "hooks.py"),
            SC_STATE=str(work / "principals.json"),
            SC_PRINCIPAL=principal,
            SC_BINARY=args.binary,
            SC_STORE_ID=p.store_id,
            SC_AUDIENCE_ID=p.fixtures["audience_id"],
            SC_DOUBLE_OPT_IN_AUDIENCE_ID=p.fixtures["double_opt_in_audience_id"],
            # schemathesis keeps found examples in a database: this run must not depend on an
            # earlier one (the seed alone decides).
            HYPOTHESIS_STORAGE_DIRECTORY=str(work / f"hypothesis-{principal}"),
        )
        report = work / f"schemathesis-{principal}"
        cmd = [
            str(args.venv_bin / "st"), "--config-file", str(HERE / "schemathesis.toml"), "run",
            p.base_url + "/openapi.json", "--url", p.base_url,
            "--checks", "all", "--exclude-checks", "positive_data_acceptance,ensure_resource_availability,use_after_free",
            "--seed", str(args.seed), "--max-examples", str(args.max_examples),
            "--generation-database", "none",
            "--no-color", "--report", "junit", "--report-dir", str(report),
        ]
        print(f"\n== schemathesis [{backend}] as {principal}", flush=True)
        rc = run(cmd, work / f"schemathesis-{principal}.log", env=env)
        tail = (work / f"schemathesis-{principal}.log").read_text().strip().splitlines()
        summary = next((line.strip("= ") for line in reversed(tail) if " in " in line and "=" in line), "")
        results.add(f"schemathesis [{backend}] {principal}", rc == 0, summary, time.monotonic() - t)
        if rc != 0:
            failures = unique_failures(work / f"schemathesis-{principal}.log")
            results.details.append(f"schemathesis [{backend}] as {principal}: {len(failures)} distinct failures")
            results.details.extend("  " + f for f in failures)


def unique_failures(log_path: Path) -> list[str]:
    """One line per distinct failure of a schemathesis log (operation, check, status, error codes),
    with the curl command that reproduces it."""
    import re

    text = log_path.read_text()
    if "FAILURES" not in text or "SUMMARY" not in text:
        return []
    body = text[text.index("FAILURES"):text.rindex("SUMMARY")]
    for marker in ("= WARNINGS", "= ERRORS"):
        if marker in body:
            body = body[:body.index(marker)]
    parts = re.split(r"\n_{3,} (.+?) _{3,}\n", body)[1:]
    out, seen = [], set()
    pattern = re.compile(r"- (ST\d+) ([^\n]*)\n.*?\n\[(\d+)\][^\n]*\n\n\s*`([^\n]*)`\n\nReproduce with:\n\n\s*(curl[^\n]*)", re.S)
    for op, sec in zip(parts[::2], parts[1::2]):
        for m in pattern.finditer(sec):
            code, title, status, answer, curl = m.groups()
            try:
                err = json.loads(answer)
                why = err.get("error", "") + "".join(
                    f" {e['field']}:{e['error']}" for e in (err.get("validation_errors") or []))
            except ValueError:
                why = answer[:80]
            key = (op, code, status, why)
            if key not in seen:
                seen.add(key)
                out.append(f"{op} | {code} {title} | {status} {why}\n      {curl}")
    return out


def postman(args, backend: str, p: harness.Principals, work: Path, results: Results, first: bool) -> None:
    t = time.monotonic()
    generated = work / "storecrm.postman_collection.json"
    rc = run(["node", str(HERE / "postman.mjs"), str(work / "openapi.json"), str(generated)],
             work / "postman-generate.log", env={**os.environ, "API_TOOLS_DIR": str(args.node_bin.parent.parent)})
    if rc != 0:
        results.add("postman collection generated", False, "postman.mjs failed", time.monotonic() - t)
        return
    if first:
        same = COLLECTION.exists() and COLLECTION.read_text() == generated.read_text()
        results.add("postman collection committed = generated", same,
                    "" if same else "postman/ is stale: run scripts/api/check.sh --write-collection "
                    "(or node scripts/api/postman.mjs docs/openapi.json postman/storecrm.postman_collection.json)",
                    time.monotonic() - t)
    t = time.monotonic()
    rc = newman(args, p, generated, work)
    results.add(f"newman [{backend}]", rc == 0, "" if rc == 0 else "see the newman output above",
                time.monotonic() - t)


def newman(args, p: harness.Principals, collection: Path, work: Path) -> int:
    """The collection as a user runs it: the getting-started folder's first half (the user pastes
    the API key and store id), the sign-in code read from the mail folder (the one manual step),
    then everything else, with the variables the first half saved."""
    driver = ["node", str(HERE / "newman-run.mjs"), "--collection", str(collection)]
    coll = json.loads(collection.read_text())
    first = coll["item"][0]
    part1, part2 = first["item"][0]["name"], first["item"][1]["name"]
    env = [f"baseUrl={p.base_url}", f"apiKey={p.api_key}", f"storeId={p.store_id}", "webhookUrl=http://127.0.0.1:9/hook",
           f"accountEmail={p.account_email}", f"accountPassword={p.account_password}"]
    base = [arg for kv in env for arg in ("--env-var", kv)]
    seen = harness.mail_names(p.mail_dir)
    print("\n== newman: Getting started, part 1", flush=True)
    saved = work / "newman-variables.json"
    rc = run([*driver, "--folder", part1, *base, "--vars-out", str(saved)], work / "newman-1.log")
    if rc != 0:
        return rc
    email = json.loads(saved.read_text()).get("shopperEmail")
    code = harness.read_code(p.mail_dir, email, seen)
    log(f"newman: the sign-in code for {email} read from the mail folder")
    print("\n== newman: the rest of the collection", flush=True)
    folders = [part2] + [f["name"] for f in coll["item"][1:]]
    cmd = [*driver, *base, "--env-var", f"code={code}", "--vars-in", str(saved),
           "--junit", str(work / "newman-junit.xml")]
    for f in folders:
        cmd += ["--folder", f]
    return run(cmd, work / "newman-2.log")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=str(ROOT / "target" / "debug" / "storecrm"))
    ap.add_argument("--venv-bin", type=Path, required=True)
    ap.add_argument("--node-bin", type=Path, required=True, help="node_modules/.bin of the npm tools")
    ap.add_argument("--seed", type=int, default=20261201)
    ap.add_argument("--max-examples", type=int, default=30)
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--skip", default="", help="comma-separated: validate,schemathesis,newman")
    ap.add_argument("--work", type=Path, default=None, help="keep logs here (default: a temporary folder)")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    backends = []
    for b in args.backends.split(","):
        if b == "postgres" and not os.environ.get("TEST_DATABASE_URL"):
            log("TEST_DATABASE_URL is not set: Postgres skipped")
            continue
        backends.append(b)

    work_root = args.work or Path(tempfile.mkdtemp(prefix="storecrm-api-check-"))
    work_root.mkdir(parents=True, exist_ok=True)
    log(f"logs and reports in {work_root}")
    results = Results()
    for i, backend in enumerate(backends):
        work = work_root / backend
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        t = time.monotonic()
        server = harness.Server(args.binary, work / "server", backend, os.environ.get("TEST_DATABASE_URL"))
        try:
            server.start()
            p = server.bootstrap()
            p.to_file(work / "principals.json")
            results.add(f"server [{backend}] started and bootstrapped", True, p.base_url, time.monotonic() - t)
            if i == 0:
                if "validate" not in skip:
                    validate_document(args, p.base_url, work, results)
                else:
                    harness.http("GET", p.base_url + "/openapi.json")
                    (work / "openapi.json").write_text(json.dumps(harness.http("GET", p.base_url + "/openapi.json")[1]))
            else:
                shutil.copy(work_root / backends[0] / "openapi.json", work / "openapi.json")
            if "schemathesis" not in skip:
                schemathesis(args, backend, p, work, results)
        except Exception as e:  # a server that does not start, a bootstrap that fails
            results.add(f"server [{backend}]", False, repr(e), time.monotonic() - t)
            server.stop()
            continue
        finally:
            server.stop()
        if "newman" not in skip:
            # newman gets a server of its own: the fuzzer has filled the first one with junk.
            t = time.monotonic()
            # Its webhook endpoint is a closed local port: nothing outside is called.
            server = harness.Server(args.binary, work / "server-newman", backend, os.environ.get("TEST_DATABASE_URL"),
                                    extra_env={"WEBHOOKS_ALLOW_PRIVATE": "true"})
            try:
                server.start()
                p = server.bootstrap()
                postman(args, backend, p, work, results, first=(i == 0))
            except Exception as e:
                results.add(f"newman [{backend}]", False, repr(e), time.monotonic() - t)
            finally:
                server.stop()
    results.print()
    return 1 if results.failed else 0


if __name__ == "__main__":
    sys.exit(main())
