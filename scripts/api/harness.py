"""Servers and principals for the API-document checks (scripts/api/check.sh).

Starts a fresh storecrm server on SQLite or on a throw-away Postgres database, bootstraps an
account, a store and an API key through the CLI, and obtains the three principals' credentials
over HTTP: the store API key, an account access token (`POST /v1/auth/login`) and a verified
profile token (`initialize` -> `auth/code` -> the code read from the mail folder -> `auth/verify`).

Standard library only: the schemathesis hooks import it from the venv, the Postman/newman step
runs it with the same interpreter.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

ACCOUNT_EMAIL = "owner@example.com"
ACCOUNT_PASSWORD = "correct horse battery staple"
SHOPPER_EMAIL = "shopper@example.com"

# The checks fuzz sign-in, login and subscribe routes hundreds of times from one address: the
# production rate limits (.env.example) would turn most of those requests into 429s and hide
# the behaviour under test. They are raised here, for these runs only; 429 stays documented.
RAISED_LIMITS = {
    "SESSION_LIMIT_PER_ADDRESS": "100000",
    "CODE_LIMIT_PER_IP": "100000",
    "CODE_LIMIT_PER_EMAIL": "100000",
    "LOGIN_LIMIT_PER_EMAIL": "100000",
    "LOGIN_LIMIT_PER_ADDRESS": "100000",
    "CONFIRM_MAIL_LIMIT_PER_RECIPIENT": "100000",
}


def log(msg: str) -> None:
    print(f"[api-check] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- HTTP


class HttpError(Exception):
    def __init__(self, status: int, body: str, what: str):
        super().__init__(f"{what}: HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


def http(method: str, url: str, body=None, token: str | None = None, timeout: float = 30.0):
    """One JSON request; returns (status, parsed body or text)."""
    data = None
    headers = {"accept": "application/json"}
    if body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    if token:
        headers["authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read().decode()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def expect(status_ok, what: str, method: str, url: str, body=None, token=None):
    status, answer = http(method, url, body, token)
    ok = status in status_ok if isinstance(status_ok, (tuple, list, set)) else status == status_ok
    if not ok:
        raise HttpError(status, json.dumps(answer) if not isinstance(answer, str) else answer, what)
    return answer


# ---------------------------------------------------------------- mail


def mail_names(mail_dir: str | Path) -> set[str]:
    """The `.eml` files now in the mail folder (to tell the next mail from older ones)."""
    mail_dir = Path(mail_dir)
    return {p.name for p in mail_dir.glob("*.eml")} if mail_dir.is_dir() else set()


def read_code(mail_dir: str | Path, recipient: str, seen: set[str] = frozenset(), timeout: float = 15.0) -> str:
    """The newest sign-in code mailed to `recipient` in a mail not in `seen`: the 6 digits that
    lead the Subject of an `.eml` file in MAIL_DIR (written by the outbox worker, so it may take
    a poll interval)."""
    mail_dir = Path(mail_dir)
    deadline = time.monotonic() + timeout
    while True:
        best = None
        if mail_dir.is_dir():
            for path in mail_dir.glob("*.eml"):
                if path.name in seen:
                    continue
                try:
                    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
                except (OSError, ValueError):
                    continue
                to = str(msg.get("To", ""))
                m = re.match(r"\s*(\d{6})\b", str(msg.get("Subject", "")))
                if m and recipient.lower() in to.lower():
                    # file names are UUIDv7: their order is the order of sending
                    if best is None or path.name > best[0]:
                        best = (path.name, m.group(1))
        if best:
            return best[1]
        if time.monotonic() > deadline:
            raise TimeoutError(f"no sign-in code for {recipient} in {mail_dir} after {timeout}s")
        time.sleep(0.05)


# ---------------------------------------------------------------- a local Stripe


class FakeStripe:
    """`POST /v1/checkout/sessions` on 127.0.0.1, answering a hosted Checkout Session the way
    Stripe does, so paid subscribes are exercised instead of answering 503
    `payments_not_configured`. Nothing leaves the machine."""

    def __init__(self):
        import http.server
        import threading

        created = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                if self.path.rstrip("/") != "/v1/checkout/sessions":
                    self.send_response(404)
                    self.end_headers()
                    return
                created.append(form)
                sid = f"cs_test_{len(created):04d}{secrets.token_hex(8)}"
                now = int(time.time())
                metadata = {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[") and k.endswith("]")}
                session = {
                    "id": sid, "object": "checkout.session", "livemode": False, "created": now,
                    "expires_at": now + 86400, "mode": form.get("mode"), "status": "open",
                    "payment_status": "unpaid", "currency": "eur", "amount_total": 900, "amount_subtotal": 900,
                    "client_reference_id": form.get("client_reference_id"),
                    "customer_email": form.get("customer_email"), "metadata": metadata,
                    "success_url": form.get("success_url"), "cancel_url": form.get("cancel_url"),
                    "url": f"https://checkout.stripe.com/c/pay/{sid}", "ui_mode": "hosted",
                    "payment_method_types": ["card"], "custom_fields": [], "discounts": [], "shipping_options": [],
                    "automatic_tax": {"enabled": False, "liability": None, "status": None},
                    "custom_text": {"after_submit": None, "shipping_address": None, "submit": None,
                                    "terms_of_service_acceptance": None},
                    "phone_number_collection": {"enabled": False}, "payment_method_collection": "always",
                    "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
                    "customer_creation": "if_required" if form.get("mode") == "payment" else "always",
                    "adaptive_pricing": {"enabled": False},
                }
                body = json.dumps(session).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.created = created
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------- server


@dataclass
class Principals:
    base_url: str
    store_id: str
    api_key: str
    api_key_id: str
    account_email: str
    account_password: str
    account_token: str
    profile_token: str
    profile_id: str
    profile_email: str
    mail_dir: str
    env: dict = field(default_factory=dict)  # the server's environment (for the CLI)
    fixtures: dict = field(default_factory=dict)  # ids of the records fixtures() made

    def to_file(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def from_file(cls, path: str | Path) -> "Principals":
        return cls(**json.loads(Path(path).read_text()))


def psql(admin_url: str, sql: str) -> None:
    subprocess.run(
        ["psql", admin_url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
        check=True,
        stdout=subprocess.DEVNULL,
    )


class Server:
    """A fresh storecrm server with its own database, mail folder and secret.

    backend: "sqlite", or "postgres" (needs `test_database_url`: a fresh database
    `sc_api_<random>` is created next to it and dropped on stop)."""

    def __init__(self, binary: str, workdir: Path, backend: str, test_database_url: str | None = None,
                 extra_env: dict | None = None):
        self.binary = binary
        self.workdir = Path(workdir)
        self.backend = backend
        self.proc: subprocess.Popen | None = None
        self.stripe: FakeStripe | None = None
        self.pg_admin: str | None = None
        self.pg_db: str | None = None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.mail_dir = self.workdir / "mail"
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "SMTP_", "STRIPE_"))}
        env.update(RAISED_LIMITS)
        env.update(
            LISTEN_ADDR=f"127.0.0.1:{port}",
            PUBLIC_BASE_URL=self.base_url,
            MAIL_DIR=str(self.mail_dir),
            SECRET_KEY=secrets.token_hex(32),
            MAIL_POLL_INTERVAL_MS="50",
            RUST_LOG=os.environ.get("API_CHECK_RUST_LOG", "warn"),
            LOG_FORMAT="pretty",
        )
        if backend == "sqlite":
            env["DATABASE_URL"] = f"sqlite://{self.workdir / 'crm.db'}"
        elif backend == "postgres":
            if not test_database_url:
                raise ValueError("postgres needs TEST_DATABASE_URL")
            self.pg_admin = test_database_url
            self.pg_db = f"sc_api_{secrets.token_hex(6)}"
            parts = urllib.parse.urlsplit(test_database_url)
            env["DATABASE_URL"] = urllib.parse.urlunsplit(parts._replace(path="/" + self.pg_db))
        else:
            raise ValueError(backend)
        # Payments on, against the local fake: the webhook route checks signatures (400) and
        # paid subscribes answer a checkout_url instead of 503 payments_not_configured.
        self.stripe_webhook_secret = "whsec_" + secrets.token_hex(24)
        env.update(STRIPE_SECRET_KEY="sk_test_api_check", STRIPE_WEBHOOK_SECRET=self.stripe_webhook_secret,
                   STRIPE_TIMEOUT_SECS="5")
        env.update(extra_env or {})
        self.env = env

    def cli(self, *args: str, stdin: str | None = None) -> dict:
        out = subprocess.run(
            [self.binary, *args], env=self.env, input=stdin, capture_output=True, text=True, check=False
        )
        if out.returncode != 0:
            raise RuntimeError(f"storecrm {' '.join(args)} failed ({out.returncode}): {out.stderr.strip()}")
        return json.loads(out.stdout)

    def start(self) -> "Server":
        if "STRIPE_API_BASE" not in self.env:
            self.stripe = FakeStripe()
            self.env["STRIPE_API_BASE"] = self.stripe.url
        if self.pg_db:
            psql(self.pg_admin, f'CREATE DATABASE "{self.pg_db}"')
        self.log_path = self.workdir / "server.log"
        self.log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary, "serve"], env=self.env, stdout=self.log_file,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                status, _ = http("GET", self.base_url + "/readyz", timeout=2)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after 60 s; see {self.log_path}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "log_file", None):
            self.log_file.close()
        if self.stripe:
            self.stripe.stop()
            self.stripe = None
        if self.pg_db:
            try:
                psql(self.pg_admin, f'DROP DATABASE IF EXISTS "{self.pg_db}" WITH (FORCE)')
            except subprocess.CalledProcessError as e:
                log(f"could not drop {self.pg_db}: {e}")
            self.pg_db = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------ principals

    def bootstrap(self, store_name: str = "API check shop") -> Principals:
        self.cli("accounts", "create", "--email", ACCOUNT_EMAIL, "--password-stdin", stdin=ACCOUNT_PASSWORD + "\n")
        store = self.cli("stores", "create", "--name", store_name, "--owner", ACCOUNT_EMAIL)["store"]
        key = self.cli("api-keys", "create", "--store", store["id"], "--name", "api-check")["api_key"]
        account_token = login(self.base_url)
        profile = verified_profile(self.base_url, store["id"], str(self.mail_dir), SHOPPER_EMAIL)
        principals = Principals(
            base_url=self.base_url,
            store_id=store["id"],
            api_key=key["key"],
            api_key_id=key["id"],
            account_email=ACCOUNT_EMAIL,
            account_password=ACCOUNT_PASSWORD,
            account_token=account_token,
            profile_token=profile["access_token"],
            profile_id=profile["profile_id"],
            profile_email=SHOPPER_EMAIL,
            mail_dir=str(self.mail_dir),
            env={k: self.env[k] for k in ("DATABASE_URL", "SECRET_KEY", "MAIL_DIR")},
        )
        principals.fixtures = fixtures(principals)
        return principals


def fixtures(p: Principals) -> dict:
    """A few records for the fuzzer to reach past 404: a taxonomy, a confirmation template, a
    standard, a double opt-in and a paid audience, and a profile created by an admin."""
    s = f"{p.base_url}/v1/stores/{p.store_id}"
    k = p.api_key
    tax = expect(201, "taxonomy", "POST", s + "/taxonomies", {
        "key": "tier",
        "schema": [
            {"key": "level", "type": "text", "options": ["gold", "silver"]},
            {"key": "spend", "type": "number", "min": 0, "max": 100000},
            {"key": "vip", "type": "boolean"},
            {"key": "home", "type": "geo_location"},
        ],
    }, k)
    tpl = expect(201, "template", "POST", s + "/email-templates", {
        "key": "confirm-news",
        "subject": "Confirm {{ audience_name }}",
        "body": "<p>Hello {{ email }}, <a href=\"{{ confirm_url }}\">confirm</a> "
                "or <a href=\"{{ unsubscribe_url }}\">leave</a>.</p>",
    }, k)
    news = expect(201, "audience", "POST", s + "/audiences", {"key": "news", "name": "News"}, k)
    digest = expect(201, "audience", "POST", s + "/audiences",
                    {"key": "digest", "name": "Digest", "confirm_template_id": tpl["id"]}, k)
    club = expect(201, "audience", "POST", s + "/audiences", {
        "key": "club", "name": "Club",
        "type": {"type": "paid", "prices": [{"id": "monthly", "currency": "EUR", "amount": 900,
                                              "interval": {"period": "month", "count": 1},
                                              "providers": [{"type": "stripe", "id": "price_api_check"}]}]},
    }, k)
    profile = expect((200, 201), "profile", "POST", s + "/profiles", {
        "email": "customer@example.com",
        "taxonomies": [{"taxonomy_id": tax["id"], "fields": [{"key": "level", "type": "text", "value": ["gold"]}]}],
    }, k)
    return {"taxonomy_id": tax["id"], "template_id": tpl["id"], "audience_id": news["id"],
            "double_opt_in_audience_id": digest["id"], "paid_audience_id": club["id"],
            "admin_profile_id": profile["id"]}


def login(base_url: str, email_addr: str = ACCOUNT_EMAIL, password: str = ACCOUNT_PASSWORD) -> str:
    token = expect(200, "login", "POST", base_url + "/v1/auth/login", {"email": email_addr, "password": password})
    return token["access_token"]


def verified_profile(base_url: str, store_id: str, mail_dir: str, email_addr: str) -> dict:
    """initialize (guest) -> auth/code -> code from the mail folder -> auth/verify with the
    guest's bearer: a verified session holding the profile of `email_addr`."""
    s = f"{base_url}/v1/stores/{store_id}/profiles"
    guest = expect(200, "initialize", "POST", s + "/initialize")
    seen = mail_names(mail_dir)
    expect(202, "requestCode", "POST", s + "/auth/code", {"email": email_addr})
    code = read_code(mail_dir, email_addr, seen)
    token = expect(200, "verify", "POST", s + "/auth/verify", {"email": email_addr, "code": code},
                   token=guest["access_token"])
    if not token.get("is_verified"):
        raise RuntimeError(f"verify answered an unverified session: {token}")
    return token


def credential_ok(base_url: str, store_id: str, principal: str, token: str) -> bool:
    """Whether a credential still works (the fuzzer may have revoked it: logout, revoke, erase)."""
    url = {
        "api_key": f"{base_url}/v1/stores/{store_id}",
        "account": f"{base_url}/v1/auth/me",
        "profile": f"{base_url}/v1/stores/{store_id}/profiles/me",
    }[principal]
    status, _ = http("GET", url, token=token, timeout=10)
    return status == 200


if __name__ == "__main__":
    # Manual use: start a bootstrapped server and print its principals until Ctrl-C.
    import argparse
    import tempfile

    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="sqlite")
    ap.add_argument("--binary", default="target/debug/storecrm")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sc-api-"))
    srv = Server(args.binary, tmp, args.backend, os.environ.get("TEST_DATABASE_URL"))
    try:
        srv.start()
        print(json.dumps(asdict(srv.bootstrap()), indent=2), flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
