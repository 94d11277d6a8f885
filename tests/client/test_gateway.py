"""ab-gateway, the original REST API over the extension: the Quick Start curl sequence end to
end, and every error mapped to its status code."""
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request

import psycopg
import pytest

from conftest import conninfo

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("AB_GATEWAY_BIN", os.path.join(ROOT, "target", "debug", "ab-gateway"))
DB = "ab_gateway_test"
ROLE = "ab_gateway_test_role"
APP_ROLE = "ab_gateway_test_app"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gateway(role, db=DB):
    port = free_port()
    url = psycopg.conninfo.make_conninfo(conninfo(db), user=role)
    proc = subprocess.Popen([BINARY], env={**os.environ, "AB_GATEWAY_DATABASE_URL": url,
                                           "AB_GATEWAY_LISTEN": f"127.0.0.1:{port}", "AB_GATEWAY_POOL_SIZE": "4"})
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(base + "/health", timeout=1)
            return proc, base
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    proc.kill()
    pytest.fail("ab-gateway did not come up")


def stop_gateway(proc):
    proc.terminate()
    assert proc.wait(timeout=10) == 0


@pytest.fixture(scope="module")
def database():
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {DB}")
        for role in (ROLE, APP_ROLE):
            if not c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                c.execute(f"CREATE ROLE {role} LOGIN")
    with psycopg.connect(conninfo(DB), autocommit=True) as c:
        c.execute("CREATE EXTENSION ab_testing")
        # The gateway runs with the administrator's grants, not as a superuser.
        c.execute("SELECT ab_grant_admin(%s)", (ROLE,))
        c.execute("SELECT ab_grant_app(%s)", (APP_ROLE,))
    yield
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


@pytest.fixture(scope="module")
def api(database):
    proc, base = start_gateway(ROLE)
    yield base
    stop_gateway(proc)


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
    schema = responses[str(status)].get("content", {}).get("application/json", {}).get("schema")
    if schema is not None:
        OAS30Validator(resolve(schema)).validate(body)


def request(base, method, path, body=None, raw=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read().decode()
            return r.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode())


def test_the_quick_start_curl_sequence_runs_to_a_winner(api):
    out = subprocess.run(["bash", os.path.join(ROOT, "examples", "curl", "quickstart.sh")],
                         env={**os.environ, "API": api + "/api/v1/experiments"},
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
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
    assert sorted((r["variant"], r["users"], r["p_value"]) for r in analysis) == sorted(rows)


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
                                 data=b'{"experiment_id": "digits", "user_id": "u", "user_attributes": {"score": 0.10000000000000000000002}}')
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


def test_a_gateway_with_application_rights_assigns_and_records_only(api):
    request(api, "POST", "/api/v1/experiments/", definition("app rights"))
    request(api, "POST", "/api/v1/experiments/app%20rights/start")
    proc, app = start_gateway(APP_ROLE)
    try:
        status, body = request(app, "POST", "/api/v1/experiments/get-variant", {"experiment_id": "app rights", "user_id": "u"})
        assert status == 200 and body["variant"] in ("a", "b")
        status, body = request(app, "POST", "/api/v1/experiments/record-result",
                               {"experiment_id": "app rights", "user_id": "u", "metric_name": "m", "metric_value": 2})
        assert (status, body) == (200, {"recorded": True})
        for method, path in [("POST", "/api/v1/experiments/"), ("POST", "/api/v1/experiments/app%20rights/stop"),
                             ("DELETE", "/api/v1/experiments/app%20rights"), ("GET", "/api/v1/experiments/app%20rights/analyze")]:
            status, body = request(app, method, path, definition("denied") if method == "POST" else None)
            assert (status, body["sqlstate"]) == (403, "42501"), (method, path, body)
    finally:
        stop_gateway(proc)
