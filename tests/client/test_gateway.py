"""ab-gateway, the original REST API over the extension: the Quick Start curl sequence end to
end, every error mapped to its status code, and its trust boundary: tokens mapped to database
roles, the Host allow-list, the same-origin rule, JSON-only bodies, timeouts."""
import json
import os
import secrets
import socket
import stat
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import psycopg
import pytest

from conftest import CITUS, conninfo
from test_readme import doc_block

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("AB_GATEWAY_BIN", os.path.join(ROOT, "target", "debug", "ab-gateway"))
DB = "ab_gateway_test"
# The gateway logs in as LOGIN_ROLE (NOINHERIT: no privileges of its own) and switches, per
# request, to the role of the request's token.
LOGIN_ROLE = "ab_gateway_test_login"
ROLE = "ab_gateway_test_role"  # ab_grant_admin
ANALYST_ROLE = "ab_gateway_test_analyst"
APP_ROLE = "ab_gateway_test_app"
TOKENS = {role: secrets.token_hex(32) for role in (ROLE, ANALYST_ROLE, APP_ROLE)}
ADMIN, ANALYST, APP = TOKENS[ROLE], TOKENS[ANALYST_ROLE], TOKENS[APP_ROLE]
TOKEN_DIR = tempfile.mkdtemp(prefix="ab_gateway_tokens_")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mapped_role(c, role):
    """A role a token can map to: NOLOGIN, its login role a member of it. Through Citus it
    needs LOGIN: the coordinator connects to the workers as the current role."""
    if not c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (LOGIN_ROLE,)).fetchone():
        c.execute(f"CREATE ROLE {LOGIN_ROLE} LOGIN NOINHERIT")
    if not c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
        c.execute(f"CREATE ROLE {role} NOLOGIN")
    if CITUS:
        c.execute(f"ALTER ROLE {role} LOGIN")
    c.execute(f"GRANT {role} TO {LOGIN_ROLE}")


def tokens_file(tokens):
    path = os.path.join(TOKEN_DIR, secrets.token_hex(4))
    with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write("".join(f"{role} {token}\n" for role, token in tokens.items()))
    return path


def launch(db=DB, tokens=None, login=LOGIN_ROLE, port=None, **settings):
    port = port or free_port()
    url = psycopg.conninfo.make_conninfo(conninfo(db), user=login)
    env = {**os.environ, "AB_GATEWAY_DATABASE_URL": url, "AB_GATEWAY_LISTEN": f"127.0.0.1:{port}",
           "AB_GATEWAY_POOL_SIZE": "4", "AB_GATEWAY_TOKENS_FILE": tokens_file(TOKENS if tokens is None else tokens), **settings}
    return subprocess.Popen([BINARY], env=env, stderr=subprocess.PIPE, text=True), f"http://127.0.0.1:{port}"


def start_gateway(db=DB, tokens=None, **settings):
    proc, base = launch(db, tokens, **settings)
    for _ in range(100):
        try:
            urllib.request.urlopen(base + "/health", timeout=1)
            return proc, base
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None:
                pytest.fail(f"ab-gateway exited: {proc.stderr.read()}")
            time.sleep(0.1)
    proc.kill()
    pytest.fail("ab-gateway did not come up")


def stop_gateway(proc):
    proc.terminate()
    assert proc.wait(timeout=10) == 0
    return proc.stderr.read()


@pytest.fixture(scope="module")
def database():
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {DB}")
        for role in (ROLE, ANALYST_ROLE, APP_ROLE):
            mapped_role(c, role)
    with psycopg.connect(conninfo(DB), autocommit=True) as c:
        c.execute("CREATE EXTENSION ab_testing")
        # Each token's role has one of the extension's sets of rights; none is a superuser.
        c.execute("SELECT ab_grant_admin(%s)", (ROLE,))
        c.execute("SELECT ab_grant_analyst(%s)", (ANALYST_ROLE,))
        c.execute("SELECT ab_grant_app(%s)", (APP_ROLE,))
    yield
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


@pytest.fixture(scope="module")
def api(database):
    proc, base = start_gateway()
    yield base
    log = stop_gateway(proc)
    # The gateway never writes a token anywhere.
    assert not any(t in log for t in TOKENS.values()), log


OPENAPI = json.load(open(os.path.join(ROOT, "gateway", "openapi.json")))


def resolve(node):
    """The schema with every #/components/schemas reference inlined."""
    if isinstance(node, dict):
        if "$ref" in node:
            return resolve(OPENAPI["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]])
        return {k: resolve(v) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(v) for v in node]
    return node


def conforms(method, template, status, body):
    """The response is documented: its status is listed for the operation, and its body
    matches the documented schema."""
    from openapi_schema_validator import OAS30Validator

    responses = OPENAPI["paths"][template][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {template} answered {status}, not documented"
    response = responses[str(status)]
    if "$ref" in response:
        response = OPENAPI["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = response.get("content", {}).get("application/json", {}).get("schema")
    if schema is not None:
        OAS30Validator(resolve(schema)).validate(body)


def request(base, method, path, body=None, raw=None, token=ADMIN, headers=None, with_headers=False):
    """(status, JSON body), as the administrator's token unless told otherwise."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    h = {"Content-Type": "application/json"}
    if token:
        h["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, data=data, method=method, headers={**h, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read().decode()
            ctype = r.headers.get("Content-Type", "")
            out = r.status, (json.loads(text) if text and "json" in ctype else (text or None)), r.headers
    except urllib.error.HTTPError as e:
        text = e.read().decode()
        ctype = e.headers.get("Content-Type", "")
        out = e.code, (json.loads(text) if text and "json" in ctype else text), e.headers
    return out if with_headers else out[:2]


def test_the_quick_start_curl_sequence_runs_to_a_winner(api):
    out = subprocess.run(["bash", os.path.join(ROOT, "examples", "curl", "quickstart.sh")],
                         env={**os.environ, "API": api + "/api/v1/experiments", "TOKEN": ADMIN},
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # The output docs/guide.md shows is what the script prints (`...`: lines left out).
    shown, at = doc_block("output of examples/curl/quickstart.sh").split("\n"), 0
    for line in (line for line in shown if line != "..."):
        assert line in lines[at:], (line, lines)
        at = lines.index(line, at) + 1
    stopped = json.loads(lines[lines.index("8. Stop and declare the winner") + 1])
    assert stopped["status"] == "stopped" and stopped["winner"] == "Treatment", stopped
    final = json.loads(lines[-1])
    assert final["status"] == "stopped" and final["winner"] == "Treatment"
    assert final["users_assigned"] == 401 and final["results_recorded"] == 401
    analysis = json.loads(lines[lines.index("6. Analyse") + 1])
    treatment = next(r for r in analysis if r["variant"] == "Treatment")
    assert treatment["significant"] and treatment["diff"] > 0
    summary = json.loads(lines[lines.index("7. Summary") + 1])["summary"]
    assert "Treatment" in summary
    # The same numbers as the SQL function called directly.
    with psycopg.connect(conninfo(DB)) as c:
        rows = c.execute("SELECT variant, users, p_value FROM ab_analyze(%s)", (final["id"],)).fetchall()
    # To 1e-12: through JSON the last digit of a p-value may differ (seen on PostgreSQL 18).
    got = sorted((r["variant"], r["users"], r["p_value"]) for r in analysis)
    assert [(v, n) for v, n, _ in got] == [(v, n) for v, n, _ in sorted(rows)]
    for (_, _, p), (_, _, q) in zip(got, sorted(rows)):
        assert (p is None and q is None) or p == pytest.approx(q, rel=1e-12, abs=0)


def definition(name, **extra):
    return {"name": name, "experiment_type": "feature", "primary_metric": "conversion_rate",
            "variants": [{"name": "a", "is_control": True, "traffic_allocation": 50},
                         {"name": "b", "traffic_allocation": 50}], **extra}


def test_lifecycle_by_name_and_listing_as_documented(api):
    E = "/api/v1/experiments"
    status, created = request(api, "POST", E + "/", definition("by name"))
    assert status == 201 and created["status"] == "draft"
    conforms("POST", E + "/", status, created)
    status, got = request(api, "GET", f"{E}/{created['id']}")
    assert status == 200 and got["name"] == "by name" and got["status"] == "draft"
    conforms("GET", E + "/{id}", status, got)
    status, body = request(api, "POST", E + "/get-variant", {"experiment_name": "by name", "user_id": "u1"})
    assert (status, body) == (200, {"variant": None})
    conforms("POST", E + "/get-variant", status, body)
    assert request(api, "POST", E + "/by%20name/start") == (200, {"status": "running"})
    conforms("POST", E + "/{id}/start", 200, {"status": "running"})
    status, body = request(api, "POST", E + "/get-variant", {"experiment_id": "by name", "user_id": "u1"})
    assert status == 200 and body["variant"] in ("a", "b")
    conforms("POST", E + "/get-variant", status, body)
    status, body = request(api, "POST", E + "/record-result",
                           {"experiment_id": "by name", "user_id": "u1", "metric_name": "conversion_rate", "metric_value": 1})
    assert (status, body) == (200, {"recorded": True})
    conforms("POST", E + "/record-result", status, body)
    status, running = request(api, "GET", E + "/?status=running")
    assert status == 200 and "by name" in [e["name"] for e in running]
    conforms("GET", E + "/", status, running)
    status, drafts = request(api, "GET", E + "/?status=draft")
    assert "by name" not in [e["name"] for e in drafts]
    status, rows = request(api, "GET", E + "/by%20name/analyze")
    assert status == 200 and {r["variant"] for r in rows} == {"a", "b"}
    conforms("GET", E + "/{id}/analyze", status, rows)
    status, body = request(api, "GET", E + "/by%20name/summary")
    assert status == 200 and "by name" in body["summary"]
    conforms("GET", E + "/{id}/summary", status, body)
    status, body = request(api, "POST", f"{E}/{created['id']}/stop")
    assert status == 200 and body["winner"] is None
    conforms("POST", E + "/{id}/stop", status, body)
    assert request(api, "DELETE", f"{E}/{created['id']}") == (204, None)
    conforms("DELETE", E + "/{id}", 204, None)
    status, body = request(api, "GET", f"{E}/{created['id']}")
    assert status == 404
    conforms("GET", E + "/{id}", status, body)


@pytest.mark.parametrize("method,path,body,raw,status,sqlstate,detail", [
    ("GET", "/api/v1/experiments/999999", None, None, 404, "42704", "experiment with id 999999 does not exist"),
    ("GET", "/api/v1/experiments/nowhere/analyze", None, None, 404, "42704", 'experiment "nowhere" does not exist'),
    ("GET", "/api/v1/experiments/nowhere/summary", None, None, 404, "42704", "does not exist"),
    ("POST", "/api/v1/experiments/nowhere/start", None, None, 404, "42704", "does not exist"),
    ("DELETE", "/api/v1/experiments/nowhere", None, None, 404, "42704", "does not exist"),
    ("POST", "/api/v1/experiments/get-variant", {"experiment_id": "nowhere", "user_id": "u"}, None, 404, "42704", "does not exist"),
    ("POST", "/api/v1/experiments/", {"name": "x"}, None, 422, "22023", "missing field"),
    ("POST", "/api/v1/experiments/", definition("x", alpha=2), None, 422, "22023", "alpha is 2"),
    ("POST", "/api/v1/experiments/", None, b"{not json", 422, "22P02", "invalid input syntax for type json"),
    ("POST", "/api/v1/experiments/get-variant", None, b"[1]", 422, "22023", "must be a JSON object"),
    ("POST", "/api/v1/experiments/get-variant", {"experiment_id": 1}, None, 422, "22023", "user_id is required"),
    ("POST", "/api/v1/experiments/get-variant", {"user_id": "u"}, None, 422, "22023", "experiment_id (or experiment_name) is required"),
    ("POST", "/api/v1/experiments/get-variant", {"experiment_id": 1, "user_id": "u", "user_attributes": [1]}, None, 422, "22023",
     "user_attributes must be a JSON object"),
    ("POST", "/api/v1/experiments/record-result", {"experiment_id": 1, "user_id": "u", "metric_name": "m", "metric_value": "high"},
     None, 422, "22023", "metric_value must be a number"),
    ("POST", "/api/v1/experiments/record-result", {"experiment_id": "errors", "user_id": "u", "metric_name": "", "metric_value": 1},
     None, 422, "22023", "metric_name must not be empty"),
    ("POST", "/api/v1/experiments/errors/stop?declare_winner=maybe", None, None, 422, "22023", "declare_winner must be true or false"),
    ("POST", "/api/v1/experiments/errors/stop", None, None, 409, "55000", "is not running"),
    ("DELETE", "/api/v1/experiments/running", None, None, 409, "55000", "is running"),
    ("POST", "/api/v1/experiments/running/start", None, None, 409, "55000", "already running"),
    ("POST", "/api/v1/experiments/", definition("errors"), None, 409, "42710", 'experiment "errors" already exists'),
])
def test_errors_map_to_documented_status_codes(api, method, path, body, raw, status, sqlstate, detail):
    if request(api, "GET", "/api/v1/experiments/errors")[0] == 404:
        request(api, "POST", "/api/v1/experiments/", definition("errors"))
        request(api, "POST", "/api/v1/experiments/", definition("running"))
        request(api, "POST", "/api/v1/experiments/running/start")
    got_status, got = request(api, method, path, body, raw)
    assert got_status == status, got
    assert detail in got["detail"]
    assert got.get("sqlstate") == sqlstate
    template = path.split("?")[0]
    for fixed in ("/get-variant", "/record-result"):
        if template.endswith(fixed):
            break
    else:
        template = "/".join("{id}" if i == 4 and part else part for i, part in enumerate(template.split("/")))
    conforms(method, template, got_status, got)


def test_an_all_digit_name_is_reached_with_by_name(api):
    E = "/api/v1/experiments"
    status, created = request(api, "POST", E + "/", definition("2024"))
    assert status == 201
    # Without by=, digits are an id (and no experiment has id 2024).
    status, body = request(api, "GET", f"{E}/2024")
    assert status == 404 and body["sqlstate"] == "42704"
    status, got = request(api, "GET", f"{E}/2024?by=name")
    assert status == 200 and got["id"] == created["id"] and got["name"] == "2024"
    conforms("GET", E + "/{id}", status, got)
    assert request(api, "GET", f"{E}/{created['id']}?by=id")[1]["name"] == "2024"
    assert request(api, "POST", f"{E}/2024/start?by=name") == (200, {"status": "running"})
    assert request(api, "GET", f"{E}/2024/summary?by=name")[0] == 200
    status, body = request(api, "GET", f"{E}/2024?by=slug")
    assert status == 422 and "by must be id or name" in body["detail"]
    conforms("GET", E + "/{id}", status, body)
    status, body = request(api, "POST", f"{E}/2024/stop?by=name")
    assert status == 200 and body["status"] == "stopped"
    assert request(api, "DELETE", f"{E}/2024?by=name")[0] == 204


def test_layered_experiments_through_the_gateway_role(api):
    """The gateway's role (ab_grant_admin) can place experiments in a layer; a full layer is a 409."""
    with psycopg.connect(conninfo(DB), autocommit=True) as c:
        c.execute("SELECT ab_create_layer('gateway layer', 20)")
    status, body = request(api, "POST", "/api/v1/experiments/",
                           definition("layered 1", layer={"name": "gateway layer", "percentage": 80}))
    assert status == 201, body
    status, body = request(api, "POST", "/api/v1/experiments/",
                           definition("layered 2", layer={"name": "gateway layer", "percentage": 1}))
    assert (status, body["sqlstate"]) == (409, "55000")
    assert "has no free range of 1%" in body["detail"]
    status, body = request(api, "GET", "/api/v1/experiments/layered%201")
    assert body["layer"] == {"name": "gateway layer", "holdout": False, "percentage": 80,
                             "range_start": 2000, "range_end": 10000}


def test_numbers_pass_through_exactly(api):
    """Configs, attributes and metric values keep every digit on the way through the gateway."""
    raw = (b'{"name": "digits", "experiment_type": "ui", "primary_metric": "m", '
           b'"target_segments": {"score": {"gte": 0.10000000000000000000001}}, "variants": ['
           b'{"name": "a", "is_control": true, "traffic_allocation": 100, '
           b'"config": {"id": 123456789012345678901234567890, "p": 0.0009595422392661621}}, '
           b'{"name": "b", "traffic_allocation": 0}]}')
    assert request(api, "POST", "/api/v1/experiments/", raw=raw)[0] == 201
    request(api, "POST", "/api/v1/experiments/digits/start")
    req = urllib.request.Request(api + "/api/v1/experiments/get-variant", method="POST",
                                 data=b'{"experiment_id": "digits", "user_id": "u", "user_attributes": {"score": 0.10000000000000000000002}}',
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(req) as r:
        text = r.read().decode()
    assert '"id":123456789012345678901234567890' in text and '"p":0.0009595422392661621' in text
    status, body = request(api, "POST", "/api/v1/experiments/get-variant",
                           raw=b'{"experiment_id": "digits", "user_id": "v", "user_attributes": {"score": 0.09}}')
    assert (status, body) == (200, {"variant": None})
    request(api, "POST", "/api/v1/experiments/record-result",
            raw=b'{"experiment_id": "digits", "user_id": "u", "metric_name": "m", "metric_value": 0.0009595422392661621}')
    with psycopg.connect(conninfo(DB)) as c:
        assert c.execute("SELECT metric_value FROM ab_results r JOIN ab_experiments e ON e.id = r.experiment_id "
                         "WHERE e.name = 'digits'").fetchone()[0] == 0.0009595422392661621


def test_concurrent_requests_share_the_pool_and_stay_sticky(api):
    """Sixteen clients on a pool of four connections: every call answers, and each user keeps
    the variant of their first answer."""
    from concurrent.futures import ThreadPoolExecutor

    request(api, "POST", "/api/v1/experiments/", definition("busy"))
    request(api, "POST", "/api/v1/experiments/busy/start")

    def ask(i):
        return request(api, "POST", "/api/v1/experiments/get-variant", {"experiment_id": "busy", "user_id": f"u{i % 100}"})

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(800)))
    assert all(status == 200 and body["variant"] in ("a", "b") for status, body in answers)
    first = {}
    for i, (_, body) in enumerate(answers):
        assert first.setdefault(i % 100, body["variant"]) == body["variant"]
    with psycopg.connect(conninfo(DB)) as c:
        assert c.execute("SELECT count(*) FROM ab_assignments a JOIN ab_experiments e ON e.id = a.experiment_id "
                         "WHERE e.name = 'busy'").fetchone()[0] == 100


def test_openapi_document_is_served_and_valid(api):
    from openapi_spec_validator import validate

    status, doc = request(api, "GET", "/api/v1/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.")
    validate(doc)
    assert "/api/v1/experiments/{id}/stop" in doc["paths"]


def test_the_application_s_token_assigns_and_records_only(api):
    request(api, "POST", "/api/v1/experiments/", definition("app rights"))
    request(api, "POST", "/api/v1/experiments/app%20rights/start")
    status, body = request(api, "POST", "/api/v1/experiments/get-variant", {"experiment_id": "app rights", "user_id": "u"},
                           token=APP)
    assert status == 200 and body["variant"] in ("a", "b")
    status, body = request(api, "POST", "/api/v1/experiments/record-result",
                           {"experiment_id": "app rights", "user_id": "u", "metric_name": "m", "metric_value": 2}, token=APP)
    assert (status, body) == (200, {"recorded": True})
    for method, path in [("POST", "/api/v1/experiments/"), ("POST", "/api/v1/experiments/app%20rights/stop"),
                         ("POST", "/api/v1/experiments/app%20rights/start"),
                         ("DELETE", "/api/v1/experiments/app%20rights"), ("GET", "/api/v1/experiments/app%20rights/analyze"),
                         ("GET", "/api/v1/experiments/app%20rights/summary")]:
        status, body = request(api, method, path, definition("denied") if path.endswith("/") else None, token=APP)
        assert (status, body["sqlstate"]) == (403, "42501"), (method, path, body)
        conforms(method, path.replace("app%20rights", "{id}"), status, body)
    assert request(api, "GET", "/api/v1/experiments/app%20rights")[1]["status"] == "running"
    assert request(api, "GET", "/api/v1/experiments/denied")[0] == 404


def test_the_analyst_s_token_reads_and_changes_nothing(api):
    request(api, "POST", "/api/v1/experiments/", definition("analyst rights"))
    request(api, "POST", "/api/v1/experiments/analyst%20rights/start")
    assert request(api, "GET", "/api/v1/experiments/analyst%20rights/analyze", token=ANALYST)[0] == 200
    assert request(api, "GET", "/api/v1/experiments/analyst%20rights/summary", token=ANALYST)[0] == 200
    assert request(api, "GET", "/api/v1/experiments/analyst%20rights", token=ANALYST)[0] == 200
    for method, path, body in [
            ("POST", "/api/v1/experiments/", definition("analyst made")),
            ("POST", "/api/v1/experiments/analyst%20rights/stop?declare_winner=true", None),
            ("DELETE", "/api/v1/experiments/analyst%20rights", None),
            ("POST", "/api/v1/experiments/record-result",
             {"experiment_id": "analyst rights", "user_id": "u", "metric_name": "m", "metric_value": 1}),
            ("POST", "/api/v1/experiments/get-variant", {"experiment_id": "analyst rights", "user_id": "u"})]:
        status, got = request(api, method, path, body, token=ANALYST)
        assert (status, got["sqlstate"]) == (403, "42501"), (method, path, got)
    with psycopg.connect(conninfo(DB)) as c:
        assert c.execute("SELECT status FROM ab_experiments WHERE name = 'analyst rights'").fetchone()[0] == "running"
        assert c.execute("SELECT count(*) FROM ab_assignments a JOIN ab_experiments e ON e.id = a.experiment_id "
                         "WHERE e.name = 'analyst rights'").fetchone()[0] == 0
        assert c.execute("SELECT count(*) FROM ab_experiments WHERE name = 'analyst made'").fetchone()[0] == 0


# --- The trust boundary (issue 26 item 3) -------------------------------------------------

def experiments_named(name):
    with psycopg.connect(conninfo(DB)) as c:
        return c.execute("SELECT count(*) FROM ab_experiments WHERE name = %s", (name,)).fetchone()[0]


def test_no_token_is_a_401_with_a_challenge(api):
    status, body, headers = request(api, "GET", "/api/v1/experiments/", token=None, with_headers=True)
    assert (status, body["sqlstate"], body["detail"]) == (401, "28000", "a token is required")
    assert headers["WWW-Authenticate"] == 'Bearer realm="ab-gateway"'
    conforms("GET", "/api/v1/experiments/", status, body)
    status, body, headers = request(api, "GET", "/api/v1/experiments/", token="x" * 64, with_headers=True)
    assert (status, body["detail"]) == (401, "the token is not valid")
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]
    status, body = request(api, "POST", "/api/v1/experiments/", definition("no token"), token=None)
    assert status == 401 and experiments_named("no token") == 0
    # A page asks a browser to log in.
    status, page, headers = request(api, "GET", "/", token=None, with_headers=True)
    assert status == 401 and '<form method="post" action="/login">' in page and headers["WWW-Authenticate"]
    # A load balancer's probe and the API's description need none.
    assert request(api, "GET", "/health", token=None) == (200, {"status": "ok"})
    assert request(api, "GET", "/api/v1/openapi.json", token=None)[0] == 200


def test_the_issue_s_cross_site_request_creates_nothing(api):
    """The request of the issue: a text/plain body from another origin, under a rebound name."""
    port = api.rsplit(":", 1)[1]
    evil = {"Content-Type": "text/plain", "Origin": "http://evil.example"}
    body = json.dumps(definition("cross site")).encode()
    # DNS rebinding: another name that resolves to the gateway.
    status, got = request(api, "POST", "/api/v1/experiments/", raw=body,
                          headers={**evil, "Host": f"evil.example:{port}"})
    assert (status, got["sqlstate"]) == (421, "22023") and "evil.example" in got["detail"]
    conforms("POST", "/api/v1/experiments/", status, got)
    # The right name, another origin: refused before any token is looked at.
    for token in (None, ADMIN):
        status, got = request(api, "POST", "/api/v1/experiments/", raw=body, headers=evil, token=token)
        assert (status, got["sqlstate"]) == (403, "42501") and "another origin" in got["detail"], got
    # A browser that sends no Origin still says where the request comes from.
    status, got = request(api, "POST", "/api/v1/experiments/", definition("cross site"),
                          headers={"Sec-Fetch-Site": "cross-site"})
    assert status == 403
    # With the token and from no browser: the body must still be JSON.
    status, got = request(api, "POST", "/api/v1/experiments/", raw=body, headers={"Content-Type": "text/plain"})
    assert (status, got["sqlstate"]) == (415, "22023") and "application/json" in got["detail"]
    conforms("POST", "/api/v1/experiments/", status, got)
    assert experiments_named("cross site") == 0
    request(api, "POST", "/api/v1/experiments/", definition("target"))
    request(api, "POST", "/api/v1/experiments/target/start")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, got = request(api, "POST", "/api/v1/experiments/record-result",
                          raw=b"experiment_id=target&user_id=u&metric_name=m&metric_value=1", headers=form)
    assert status == 415
    for path in ("/api/v1/experiments/target/stop?declare_winner=true", "/api/v1/experiments/target/start"):
        status, got = request(api, "POST", path, headers={"Origin": "http://evil.example"})
        assert status == 403, (path, got)
    status, got = request(api, "DELETE", "/api/v1/experiments/target", headers={"Origin": f"http://127.0.0.1:{int(port) + 1}"})
    assert status == 403, "another port is another origin"
    status, got = request(api, "GET", "/api/v1/experiments/target")
    assert got["status"] == "running" and got["users_assigned"] == 0
    with psycopg.connect(conninfo(DB)) as c:
        assert c.execute("SELECT count(*) FROM ab_results r JOIN ab_experiments e ON e.id = r.experiment_id "
                         "WHERE e.name = 'target'").fetchone()[0] == 0
    # The gateway's own origin, with the token: works.
    status, got = request(api, "POST", "/api/v1/experiments/", definition("same origin"),
                          headers={"Origin": api, "Sec-Fetch-Site": "same-origin"})
    assert status == 201 and experiments_named("same origin") == 1


def test_no_cors_headers_unless_configured(api, database):
    preflight = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    status, _, headers = request(api, "OPTIONS", "/api/v1/experiments/", token=None, headers=preflight, with_headers=True)
    assert "Access-Control-Allow-Origin" not in headers
    _, _, headers = request(api, "GET", "/api/v1/experiments/", headers={"Origin": "http://app.example"}, with_headers=True)
    assert "Access-Control-Allow-Origin" not in headers
    proc, base = start_gateway(AB_GATEWAY_CORS_ORIGINS="http://app.example")
    try:
        status, _, headers = request(base, "OPTIONS", "/api/v1/experiments/", token=None, headers=preflight,
                                     with_headers=True)
        assert status == 204 and headers["Access-Control-Allow-Origin"] == "http://app.example"
        assert "authorization" in headers["Access-Control-Allow-Headers"]
        assert "Access-Control-Allow-Credentials" not in headers, "cookies are never for other origins"
        status, _, headers = request(base, "POST", "/api/v1/experiments/", definition("cors"),
                                     headers={"Origin": "http://app.example"}, with_headers=True)
        assert status == 201 and headers["Access-Control-Allow-Origin"] == "http://app.example"
        # Still a token: the origin alone grants nothing.
        assert request(base, "POST", "/api/v1/experiments/", definition("cors 2"), token=None,
                       headers={"Origin": "http://app.example"})[0] == 401
        status, _, headers = request(base, "OPTIONS", "/api/v1/experiments/", token=None,
                                     headers={**preflight, "Origin": "http://evil.example"}, with_headers=True)
        assert "Access-Control-Allow-Origin" not in headers
    finally:
        stop_gateway(proc)


def login_cookie(api, token):
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args):
            return None
    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(f"{api}/login?token={token}", timeout=10)
    except urllib.error.HTTPError as e:
        return e.code, e.headers
    pytest.fail("no redirect")


def test_a_browser_s_cookie_reads_from_the_gateway_s_own_pages_only(api):
    status, headers = login_cookie(api, ANALYST)
    assert status == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"ab_gateway_token={ANALYST};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    jar = {"Cookie": cookie.split(";")[0]}
    status, page = request(api, "GET", "/", token=None, headers={**jar, "Sec-Fetch-Site": "same-origin"})
    assert status == 200 and "<h1>Experiments</h1>" in page
    assert request(api, "GET", "/api/v1/experiments/", token=None, headers=jar)[0] == 200
    # A link from elsewhere opens a page; another origin's script or form gets nothing.
    nav = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
    assert request(api, "GET", "/", token=None, headers={**jar, **nav})[0] == 200
    for site in ("cross-site", "same-site"):
        fetch = {"Sec-Fetch-Site": site, "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "empty"}
        assert request(api, "GET", "/api/v1/experiments/", token=None, headers={**jar, **fetch})[0] == 401
        assert request(api, "GET", "/", token=None, headers={**jar, **fetch})[0] == 401
    # The cookie never changes anything, even the administrator's and from the same origin.
    status, headers = login_cookie(api, ADMIN)
    admin_jar = {"Cookie": headers["Set-Cookie"].split(";")[0], "Origin": api, "Sec-Fetch-Site": "same-origin"}
    status, got = request(api, "POST", "/api/v1/experiments/", definition("by cookie"), token=None, headers=admin_jar)
    assert status == 401 and experiments_named("by cookie") == 0
    # Logging in is refused from another site (it would log the browser in as someone else).
    req = urllib.request.Request(f"{api}/login?token={ANALYST}", headers={"Sec-Fetch-Site": "cross-site"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 403 and "Set-Cookie" not in e.value.headers
    assert login_cookie(api, "y" * 64)[0] == 401
    status, page = request(api, "GET", "/login", token=None)
    assert status == 200 and 'type="password" name="token"' in page


def post_login(api, body, headers):
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args):
            return None
    req = urllib.request.Request(f"{api}/login", data=body, method="POST", headers=headers)
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=10) as r:
            return r.status, r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.headers


def test_the_login_form_posts_from_the_gateway_s_own_page_only(api):
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, headers = post_login(api, f"token={ANALYST}".encode(), {**form, "Origin": api})
    assert status == 303 and headers["Set-Cookie"].startswith(f"ab_gateway_token={ANALYST};")
    for origin in ("http://evil.example", "http://127.0.0.1:1"):
        status, headers = post_login(api, f"token={ANALYST}".encode(), {**form, "Origin": origin})
        assert status == 403 and "Set-Cookie" not in headers
    status, headers = post_login(api, f"token={ANALYST}".encode(), {"Content-Type": "text/plain", "Origin": api})
    assert status == 415 and "Set-Cookie" not in headers
    status, headers = post_login(api, b"token=" + b"z" * 64, {**form, "Origin": api})
    assert status == 401 and "Set-Cookie" not in headers


@pytest.mark.parametrize("case", ["no tokens", "loose file", "superuser", "not a member", "inherits", "short token"])
def test_the_gateway_refuses_to_start_unsafely(database, case):
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        if not c.execute("SELECT 1 FROM pg_roles WHERE rolname = 'ab_gateway_test_inherits'").fetchone():
            c.execute("CREATE ROLE ab_gateway_test_inherits LOGIN INHERIT")
            c.execute(f"GRANT {APP_ROLE} TO ab_gateway_test_inherits")
        if not c.execute("SELECT 1 FROM pg_roles WHERE rolname = 'ab_gateway_test_stranger'").fetchone():
            c.execute("CREATE ROLE ab_gateway_test_stranger NOLOGIN")
    kwargs, message = {
        "no tokens": ({"tokens": {}}, "no tokens"),
        "loose file": ({}, "may be read by other users"),
        "superuser": ({"login": "postgres"}, "a superuser"),
        "not a member": ({"tokens": {"ab_gateway_test_stranger": "s" * 64}}, "is not a member of role"),
        "inherits": ({"login": "ab_gateway_test_inherits", "tokens": {APP_ROLE: APP}}, "inherits the privileges"),
        "short token": ({"tokens": {APP_ROLE: "abc"}}, "at least 32"),
    }[case]
    proc, _ = launch(**kwargs)
    if case == "loose file":
        proc.kill()
        proc.wait()
        path = tokens_file(TOKENS)
        os.chmod(path, 0o644)
        proc, _ = launch(AB_GATEWAY_TOKENS_FILE=path)
    assert proc.wait(timeout=30) == 2
    err = proc.stderr.read()
    assert message in err, err
    assert not any(t in err for t in TOKENS.values())


# --- JSON edge cases (issue 26 item 8) -------------------------------------------------------

@pytest.mark.parametrize("method,path,raw,sqlstate,detail", [
    ("GET", "/api/v1/experiments/a%00b", None, "22023", "the experiment must not contain a NUL character"),
    ("GET", "/api/v1/experiments/99999999999999999999", None, "22003", "experiment id 99999999999999999999 is out of range"),
    ("POST", "/api/v1/experiments/get-variant", b'{"experiment_id": "a\\u0000b", "user_id": "u"}', "22023",
     "experiment_id must not contain a NUL character"),
    ("POST", "/api/v1/experiments/get-variant", b'{"experiment_id": "edge", "user_id": "u\\u0000"}', "22023",
     "user_id must not contain a NUL character"),
    ("POST", "/api/v1/experiments/get-variant", b'{"experiment_id": 99999999999999999999, "user_id": "u"}', "22003",
     "experiment_id 99999999999999999999 is out of range"),
    ("POST", "/api/v1/experiments/get-variant", b'{"experiment_id": 1.5, "user_id": "u"}', "22023",
     "experiment_id must be an integer"),
    ("POST", "/api/v1/experiments/get-variant", b'{"experiment_id": "edge", "user_id": "u", "user_attributes": {"k": "\\u0000"}}',
     "22P05", "unsupported Unicode escape sequence"),
    ("POST", "/api/v1/experiments/get-variant", b'{"experiment_id": "edge", "user_id": "\\ud800"}', "22023",
     "request body is not valid JSON"),
    ("POST", "/api/v1/experiments/record-result",
     b'{"experiment_id": "edge", "user_id": "u", "metric_name": "m", "metric_value": 1e400}', "22003",
     "metric_value 1e+400 is out of range for type double precision"),
    ("POST", "/api/v1/experiments/record-result",
     b'{"experiment_id": "edge", "user_id": "u", "metric_name": "m", "metric_value": -1E+400}', "22003",
     "metric_value -1e+400 is out of range"),
    ("POST", "/api/v1/experiments/record-result",
     b'{"experiment_id": "edge", "user_id": "u", "metric_name": "m", "metric_value": 1e-400}', "22003",
     "metric_value 1e-400 is out of range for type double precision"),
    ("POST", "/api/v1/experiments/record-result",
     b'{"experiment_id": "edge", "user_id": "u", "metric_name": "m\\u0000", "metric_value": 1}', "22023",
     "metric_name must not contain a NUL character"),
    ("POST", "/api/v1/experiments/", b'{"name": "nul\\u0000", "experiment_type": "ui", "primary_metric": "m", "variants": []}',
     "22P05", "unsupported Unicode escape sequence"),
])
def test_json_edge_cases_are_422_and_change_nothing(api, method, path, raw, sqlstate, detail):
    if request(api, "GET", "/api/v1/experiments/edge")[0] == 404:
        request(api, "POST", "/api/v1/experiments/", definition("edge"))
        request(api, "POST", "/api/v1/experiments/edge/start")
    status, got = request(api, method, path, raw=raw)
    assert (status, got["sqlstate"]) == (422, sqlstate), got
    assert detail in got["detail"], got
    with psycopg.connect(conninfo(DB)) as c:
        assert c.execute("SELECT count(*) FROM ab_results r JOIN ab_experiments e ON e.id = r.experiment_id "
                         "WHERE e.name = 'edge'").fetchone()[0] == 0
        assert c.execute("SELECT count(*) FROM ab_experiments WHERE name LIKE 'nul%'").fetchone()[0] == 0


def test_json_edge_values_that_are_accepted(api):
    assert request(api, "POST", "/api/v1/experiments/", definition("edge ok", salt="edge-ok", variants=[
        {"name": "a", "is_control": True, "traffic_allocation": 100}, {"name": "b", "traffic_allocation": 0}]))[0] == 201
    request(api, "POST", "/api/v1/experiments/edge%20ok/start")
    users = ["minus zero", "huge int", "tiny", "ctl\u0001\u007f\u202e"]
    for user in users:
        assert request(api, "POST", "/api/v1/experiments/get-variant",
                       {"experiment_id": "edge ok", "user_id": user})[1]["variant"] == "a"
    for user, value in [("minus zero", b"-0"), ("huge int", b"123456789012345678901234567890"),
                        ("tiny", b"4.9e-324"), ("ctl\\u0001\\u007f\\u202e", b"2")]:
        raw = b'{"experiment_id": "edge ok", "user_id": "' + user.encode() + b'", "metric_name": "m", "metric_value": ' + value + b"}"
        status, got = request(api, "POST", "/api/v1/experiments/record-result", raw=raw)
        if user == "huge int":
            # A float8, but beyond what the extension records: its own 422.
            assert (status, got["sqlstate"]) == (422, "22023") and "between -1e15 and 1e15" in got["detail"], got
        else:
            assert (status, got) == (200, {"recorded": True}), (user, got)
    with psycopg.connect(conninfo(DB)) as c:
        got = dict(c.execute("SELECT r.user_id, r.metric_value::text FROM ab_results r "
                             "JOIN ab_experiments e ON e.id = r.experiment_id WHERE e.name = 'edge ok'").fetchall())
    assert got == {"minus zero": "0", "tiny": "5e-324",
                   "ctl\u0001\u007f\u202e": "2"}


# --- One experiment cannot take the list down; timeouts (issue 26 item 5) -------------------

def source_experiment(c, name, relation):
    definition_ = {"name": name, "experiment_type": "ui", "primary_metric": "m", "salt": name, "min_sample_size": 5,
                   "metrics": {"m": {"aggregation": "sum", "source": {
                       "relation": relation, "user_column": "uid", "time_column": "at", "value_column": "v"}}},
                   "variants": [{"name": "a", "is_control": True, "traffic_allocation": 50},
                                {"name": "b", "traffic_allocation": 50}]}
    from psycopg.types.json import Jsonb
    eid = c.execute("SELECT ab_create_experiment(%s)", (Jsonb(definition_),)).fetchone()[0]
    c.execute("SELECT ab_start_experiment(%s)", (eid,))
    c.execute("SELECT count(ab_get_variant(%s, 'u' || g)) FROM generate_series(1, 20) g", (eid,))
    return eid


@pytest.fixture(scope="module")
def sources(database):
    with psycopg.connect(conninfo(DB), autocommit=True) as c:
        c.execute("CREATE SCHEMA gw")
        c.execute(f"GRANT USAGE ON SCHEMA gw TO {ANALYST_ROLE}")
        ids = {}
        for table, value in [("fine", "1"), ("secret", "1"), ("dropped", "1"), ("huge", "1e16 * g")]:
            c.execute(f"CREATE TABLE gw.{table} (uid text, at timestamptz, v float8)")
            ids[table] = source_experiment(c, f"list {table}", f"gw.{table}")
            # After the assignments: a source row counts from the user's assignment on.
            c.execute(f"INSERT INTO gw.{table} SELECT 'u' || g, now(), {value} FROM generate_series(1, 20) g")
            if table != "secret":
                c.execute(f"GRANT SELECT ON gw.{table} TO {ANALYST_ROLE}")
        c.execute("DROP TABLE gw.dropped")
        # A source that sleeps 0.5 s on every row it reads (security_barrier: before any
        # condition of the analysis's can filter the row).
        c.execute("CREATE TABLE gw.slow_rows (uid text, at timestamptz, v float8)")
        c.execute("CREATE VIEW gw.slow WITH (security_barrier) AS SELECT * FROM gw.slow_rows "
                  "WHERE pg_sleep(0.5)::text = ''")
        c.execute(f"GRANT SELECT ON gw.slow TO {ANALYST_ROLE}")
        ids["slow"] = source_experiment(c, "list slow", "gw.slow")
        c.execute("INSERT INTO gw.slow_rows SELECT 'u' || g, now(), 1 FROM generate_series(1, 20) g")
    return ids


def test_one_experiment_s_failure_shows_on_its_row_only(api, sources):
    """The list runs each running experiment's analysis on its own: one the analyst cannot read,
    one whose source table was dropped, one with a value out of range, one past the statement
    timeout: each shows its error, and every other row shows as usual."""
    proc, base = start_gateway(AB_GATEWAY_STATEMENT_TIMEOUT_MS="1000")
    try:
        started = time.monotonic()
        status, page = request(base, "GET", "/", token=ANALYST)
        assert status == 200, page
        assert time.monotonic() - started < 10
    finally:
        stop_gateway(proc)
    import re
    rows = dict(re.findall(r'<tr data-id="(\d+)">(.*?)</tr>', page, re.S))
    fine = rows[str(sources["fine"])]
    assert "analysis-error" not in fine and "no winner yet" in fine, fine
    expected = {"secret": (403, "permission denied"), "dropped": (500, "does not exist"),
                "huge": (422, ""), "slow": (504, "statement timeout")}
    for name, (code, words) in expected.items():
        row = rows[str(sources[name])]
        error = re.search(r'<span class="bad analysis-error" data-status="(\d+)">not analysed: (.*?)</span>', row)
        assert error, (name, row)
        assert int(error.group(1)) == code and words in error.group(2), (name, error.groups())
    # The page wrote nothing: the list's analyses were rolled back.
    with psycopg.connect(conninfo(DB)) as c:
        assert c.execute("SELECT count(*) FROM ab_insights WHERE experiment_id = %s", (sources["fine"],)).fetchone()[0] == 0


def test_health_answers_while_slow_requests_hold_every_connection(api, sources):
    proc, base = start_gateway(AB_GATEWAY_POOL_SIZE="2", AB_GATEWAY_STATEMENT_TIMEOUT_MS="1500",
                               AB_GATEWAY_POOL_TIMEOUT_MS="500")
    results = []
    try:
        def slow():
            results.append(request(base, "GET", "/api/v1/experiments/list%20slow/analyze", token=ANALYST))
        threads = [threading.Thread(target=slow) for _ in range(3)]
        for t in threads:
            t.start()
            time.sleep(0.1)
        started = time.monotonic()
        assert request(base, "GET", "/health", token=None) == (200, {"status": "ok"})
        assert time.monotonic() - started < 0.5, "health waited for the pool"
        for t in threads:
            t.join(30)
    finally:
        stop_gateway(proc)
    statuses = sorted(status for status, _ in results)
    # Two held the pool's two connections until the statement timeout; the third waited
    # 500 ms for one and was told the database is busy.
    assert statuses == [503, 504, 504], results
    for status, body in results:
        conforms("GET", "/api/v1/experiments/{id}/analyze", status, body)
        if status == 504:
            assert body["sqlstate"] == "57014" and "statement timeout" in body["detail"]
        else:
            assert "no connection became free" in body["detail"]


def test_each_request_runs_as_its_token_s_role(api):
    """The audit trail names the token's role as the one who acted (the login role only logged in)."""
    status, created = request(api, "POST", "/api/v1/experiments/", definition("audited"))
    assert status == 201
    assert request(api, "POST", "/api/v1/experiments/audited/start")[0] == 200
    with psycopg.connect(conninfo(DB)) as c:
        rows = c.execute("SELECT action, role_name::text, session_role::text FROM ab_audit WHERE experiment_id = %s "
                         "ORDER BY id", (created["id"],)).fetchall()
    assert rows == [("created", ROLE, LOGIN_ROLE), ("started", ROLE, LOGIN_ROLE)]
    # The login role itself can do nothing: it inherits none of its roles' rights.
    with psycopg.connect(psycopg.conninfo.make_conninfo(conninfo(DB), user=LOGIN_ROLE)) as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT * FROM ab_experiment_overview")


def test_tokens_from_the_environment(api):
    proc, base = start_gateway(tokens={}, AB_GATEWAY_TOKENS=f"# the application only\n{APP_ROLE} {APP}\n")
    try:
        request(api, "POST", "/api/v1/experiments/", definition("env tokens"))
        request(api, "POST", "/api/v1/experiments/env%20tokens/start")
        status, body = request(base, "POST", "/api/v1/experiments/get-variant",
                               {"experiment_id": "env tokens", "user_id": "u"}, token=APP)
        assert status == 200 and body["variant"] in ("a", "b")
        assert request(base, "GET", "/api/v1/experiments/", token=ADMIN)[0] == 401
    finally:
        log = stop_gateway(proc)
    assert APP not in log and f"the tokens' roles: {APP_ROLE}\n" in log


def test_a_role_the_login_role_may_no_longer_switch_to_is_refused(api):
    """Membership revoked while the gateway runs: the connection that ran the last request as
    the role is closed after it, and no new one can switch to the role (503, nothing runs)."""
    request(api, "POST", "/api/v1/experiments/", definition("revoked"))
    request(api, "POST", "/api/v1/experiments/revoked/start")
    proc, base = start_gateway(tokens={APP_ROLE: APP}, AB_GATEWAY_POOL_SIZE="1")
    ask = {"experiment_id": "revoked", "user_id": "u"}
    try:
        assert request(base, "POST", "/api/v1/experiments/get-variant", ask, token=APP)[0] == 200
        with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
            c.execute(f"REVOKE {APP_ROLE} FROM {LOGIN_ROLE}")
        try:
            request(base, "POST", "/api/v1/experiments/get-variant", {**ask, "user_id": "v"}, token=APP)
            status, body = request(base, "POST", "/api/v1/experiments/get-variant", {**ask, "user_id": "w"}, token=APP)
            assert status == 503 and "permission denied to set role" in body["detail"], body
            conforms("POST", "/api/v1/experiments/get-variant", status, body)
        finally:
            with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
                c.execute(f"GRANT {APP_ROLE} TO {LOGIN_ROLE}")
        assert request(base, "POST", "/api/v1/experiments/get-variant", {**ask, "user_id": "w"}, token=APP)[0] == 200
    finally:
        stop_gateway(proc)
    with psycopg.connect(conninfo(DB)) as c:
        users = c.execute("SELECT a.user_id FROM ab_assignments a JOIN ab_experiments e ON e.id = a.experiment_id "
                          "WHERE e.name = 'revoked' ORDER BY 1").fetchall()
    assert [u for u, in users] in (["u", "v", "w"], ["u", "w"])
