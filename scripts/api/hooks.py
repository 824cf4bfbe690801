"""schemathesis hooks of scripts/api/check.sh: the principal a run speaks as.

`SC_PRINCIPAL` (api_key | account | profile) picks the credential, `SC_STATE` names the JSON file
harness.py wrote for the server under test (base URL, store id, credentials, mail folder, the
server's DATABASE_URL / SECRET_KEY for the CLI).

Every request carries the principal's bearer. The fuzzer is free to call the routes that end a
credential (`POST /v1/auth/logout`, `POST .../profiles/auth/logout`, `DELETE .../sessions`,
`DELETE .../api-keys/{id}`, `DELETE .../profiles/{id}`): schemathesis then sees a 401, asks this
provider again (its reactive re-authentication) and replays the request once; `get` answers the
current credential while it still works and otherwise obtains a new one the way a client would
(log in again, verify a new code, or create a key with the CLI). Nothing here shapes requests or
judges answers.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import schemathesis

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

PRINCIPAL = os.environ["SC_PRINCIPAL"]
STATE = harness.Principals.from_file(os.environ["SC_STATE"])


def _renew(principal: str) -> str:
    if principal == "api_key":
        srv_env = {**os.environ, **STATE.env}
        import json
        import subprocess

        out = subprocess.run(
            [os.environ["SC_BINARY"], "api-keys", "create", "--store", STATE.store_id, "--name", "api-check-renewed"],
            env=srv_env, capture_output=True, text=True, check=True,
        )
        return json.loads(out.stdout)["api_key"]["key"]
    if principal == "account":
        return harness.login(STATE.base_url, STATE.account_email, STATE.account_password)
    if principal == "profile":
        return harness.verified_profile(STATE.base_url, STATE.store_id, STATE.mail_dir, STATE.profile_email)[
            "access_token"
        ]
    raise ValueError(principal)


@schemathesis.auth(refresh_interval=3600)
class Principal:
    def __init__(self) -> None:
        self.token = {"api_key": STATE.api_key, "account": STATE.account_token, "profile": STATE.profile_token}[
            PRINCIPAL
        ]
        self.renewals = 0
        self.lock = threading.Lock()
        self.first = True

    def get(self, case, ctx):
        with self.lock:
            if self.first:
                self.first = False
                return self.token
            if not harness.credential_ok(STATE.base_url, STATE.store_id, PRINCIPAL, self.token):
                try:
                    self.token = _renew(PRINCIPAL)
                except Exception as e:  # schemathesis only says "token fetch failed": say why
                    harness.log(f"{PRINCIPAL}: renewing the credential failed: {e!r}")
                    raise
                self.renewals += 1
                harness.log(f"{PRINCIPAL}: credential revoked by an earlier request; renewed ({self.renewals})")
            return self.token

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


# ---------------------------------------------------------------- positive data, state-aware
#
# The built-in `positive_data_acceptance` check (ST202) sends schema-valid requests and expects
# them accepted. It is replaced by the check below, which runs the built-in one unchanged and
# forgives exactly one kind of rejection: a documented 400/422 whose every reason is something
# a JSON Schema cannot state, because it depends on what is stored or compares two values. Any
# other rejection of schema-valid data - an empty string the schema allows, a key pattern or an
# enum the schema does not spell, an unknown field where the schema has no
# `additionalProperties: false` - still fails: the document has to say it.

# 422 `validation_errors[].error` codes that depend on stored state or on a relation JSON Schema
# cannot express, each with the reason:
STATE_DEPENDENT_422 = {
    # an opaque cursor from another list, another query or none at all: only the server knows
    "invalid_cursor", "cursor_mismatch",
    # references to stored records inside a body or query (contract §5, §6: 422, not 404)
    "unknown_taxonomy", "unknown_template", "unknown_price", "price_not_on_stripe",
    # profile taxonomy entries and queries are checked against the stored definition (§5)
    "type_mismatch", "option_not_allowed", "out_of_range", "invalid_range", "expected_pair",
    "too_many_values", "invalid_length",
    # merge: the body's source_id equals the path's id
    "same_as_target",
    # update against the stored audience type
    "type_immutable", "only_for_paid",
    # a link checked against the store's stored allowed_origins (§6)
    "origin_not_allowed",
    # a webhook URL whose host does not resolve, or resolves to a private address: DNS answers,
    # not the URL's shape (the document's pattern already asks for https and a host name)
    "unresolvable_host", "private_address",
    # subscribe to a double opt-in audience by a profile that has no email (stored state)
    "email_required",
    # template text: minijinja syntax and rendering are not a JSON Schema matter
    "invalid_template", "render_failed",
    # comparisons between two values (min <= max, compare_at >= amount) and uniqueness of a
    # member across array items: JSON Schema has neither
    "greater_than_max", "below_amount", "duplicate_key", "duplicate_field", "duplicate_taxonomy",
    "duplicate_id",
    # an import's file is one string to the document: its header and columns are checked against
    # the store's taxonomies and audiences and against each other (docs/data.md)
    "email_column_required", "unknown_column", "unknown_target", "duplicate_column", "unknown_audience",
    "paid_audience", "csv_only", "empty", "invalid_csv", "invalid_utf8", "wrong_column_count",
}
# 400 codes of the same kind: a confirm / unsubscribe token that is unknown, used or expired
# (opaque single-use tokens; 400 is the documented answer of both routes), and a Stripe-Signature
# that is not an HMAC of the body under the webhook secret (like a credential, only its holder
# can produce a valid one; schemathesis exempts credential checks the same way).
STATE_DEPENDENT_400 = {"invalid_token", "invalid_signature", "timestamp_out_of_tolerance"}


# 422 codes that depend on stored state only at some fields: a key inside profile taxonomy values
# or a taxonomy query that the stored taxonomy definition does not have (contract 5).
import re  # noqa: E402

STATE_DEPENDENT_AT = {
    "unknown_field": re.compile(r"^(taxonomies|taxonomy_query)\[\d+\]\.(fields|query)\[\d+\]\.key$"),
}

# Rules that join two parts of a request, which a JSON Schema of one part cannot state, by
# operation: (field, code). The unsubscribe token comes in the query or in the body, so each is
# optional alone (contract 6: "token in body or ?token=").
ACROSS_PARTS = {
    "POST /v1/stores/{storeId}/audiences/unsubscribe": {("token", "required")},
    # a segment's filters, or find's filters, not both (docs/data.md)
    "GET /v1/stores/{storeId}/profiles/export": {("segment", "conflicts_with_filters")},
}

# JSON text inside a string field or query parameter (a taxonomy query, an import mapping): the
# document says "a string holding JSON"; its JSON is parsed by the server.
JSON_IN_STRING = {("taxonomy_query", "invalid_json"), ("mapping", "invalid_mapping")}


def _forgiven(case, e: dict) -> bool:
    code, field = e.get("error"), e.get("field", "")
    if code in STATE_DEPENDENT_422:
        return True
    if code in STATE_DEPENDENT_AT and STATE_DEPENDENT_AT[code].match(field):
        return True
    if (field, code) in JSON_IN_STRING:
        return True
    return (field, code) in ACROSS_PARTS.get(case.operation.label, set())


def _state_dependent(response, case) -> bool:
    try:
        body = response.json()
    except Exception:
        return False
    if not isinstance(body, dict):
        return False
    if response.status_code == 400:
        return body.get("error") in STATE_DEPENDENT_400
    if response.status_code == 422:
        errors = body.get("validation_errors") or []
        return bool(errors) and all(_forgiven(case, e) for e in errors)
    return False


from schemathesis.openapi.checks import RejectedPositiveData  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance as _builtin_positive  # noqa: E402


@schemathesis.check
def positive_data_acceptance_state_aware(ctx, response, case):
    try:
        return _builtin_positive(ctx, response, case)
    except RejectedPositiveData:
        if _state_dependent(response, case):
            return None
        raise


# ---------------------------------------------------------------- checks that cannot apply to an operation
#
# Two stateful checks are replaced by the same checks minus the operations below, where their
# premise does not hold; each entry says why. (schemathesis.toml excludes the built-in ones; its
# per-operation `checks` settings are not consulted by the stateful phase.)

from schemathesis.specs.openapi.checks import ensure_resource_availability as _builtin_availability  # noqa: E402
from schemathesis.specs.openapi.checks import use_after_free as _builtin_use_after_free  # noqa: E402

# ensure_resource_availability (ST302) reads a 404 after a create as "the created record is
# missing". These operations also answer 404 for an unknown record named in the BODY (contract
# 3.1: merge's source "in another store -> 404"; subscribe and addSubscriber: an unknown
# profile_id), so their 404 does not say the path's record is missing.
AVAILABILITY_NOT_APPLICABLE = {
    "POST /v1/stores/{storeId}/profiles/{id}/merge",
    "POST /v1/stores/{storeId}/audiences/{id}/subscribe",
    "POST /v1/stores/{storeId}/audiences/{id}/subscribers",
}

# use_after_free (ST301) reads a 2xx after a DELETE of the same path as "the deleted record is
# still there". `DELETE /profiles/{id}/sessions` ends the profile's sessions, not the list, which
# then rightly answers 200 with no items.
USE_AFTER_FREE_NOT_APPLICABLE = {
    "GET /v1/stores/{storeId}/profiles/{id}/sessions",
}


@schemathesis.check
def ensure_resource_availability_body_refs_aside(ctx, response, case):
    if case.operation.label in AVAILABILITY_NOT_APPLICABLE:
        return None
    return _builtin_availability(ctx, response, case)


@schemathesis.check
def use_after_free_member_deletes_aside(ctx, response, case):
    if case.operation.label in USE_AFTER_FREE_NOT_APPLICABLE:
        return None
    return _builtin_use_after_free(ctx, response, case)
