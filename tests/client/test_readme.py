"""The README's code blocks, read from the README itself, run against the test cluster.

Each fenced block runs according to the HTML comment on the line before it:

- no comment, `sql`: in one database with the extension, shared by the README's blocks in order;
- `sql, in a new database` / `sql, in a new database with the extension`: in a database of its own;
- `signatures`: every `ab_*` name in it is a function or relation of the extension;
- `sh`: with bash from the repository root, pointed at the test cluster (`sh, twice`: run
  twice, the second run proving it can be repeated);
- `python; ...` / `node; ...`: a snippet, run with the names the comment lists defined;
- `output of ab_summary('x')`: the summary of that experiment, at that point, is this text;
- `same as examples/curl/quickstart.sh`: every endpoint it calls is called by that script;
- `skip; reason`: not run, and the reason says why.

In SQL, `-- returns v` after a statement is what it returns (`a | b` for a row's columns, one
row per line), and `-- fails with SQLSTATE: message` the error it raises.
"""
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from types import SimpleNamespace

import psycopg
import pytest
from psycopg.types.json import Jsonb

from conftest import conninfo
from test_operations import drop_db, fresh_db

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
README = os.path.join(ROOT, "README.md")
PGHOST = os.environ.get("PGHOST", "/tmp/ab_testing_pg")
PGPORT = os.environ.get("PGPORT", "5499")
ROLES = ["webapp", "analysts", "experimenters"]


def blocks():
    lines = open(README, encoding="utf-8").read().split("\n")
    found, i = [], 0
    while i < len(lines):
        fence = re.match(r"^```(\w+)$", lines[i])
        if fence:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            assert lines[end] == "```", f"README.md line {end + 1}: a block opens inside the block of line {i + 1}"
            marker = re.match(r"^<!-- readme-test: (.*) -->$", lines[i - 1]) if i else None
            found.append(SimpleNamespace(lang=fence.group(1), marker=marker.group(1) if marker else None,
                                         text="\n".join(lines[i + 1:end]), line=i + 1))
            i = end
        i += 1
    return found


def code_part(line):
    """The line without a trailing `--` comment (outside quotes)."""
    quoted = False
    for k, ch in enumerate(line):
        if ch == "'":
            quoted = not quoted
        elif not quoted and line.startswith("--", k):
            return line[:k]
    return line


def statements(sql):
    """(statement, expectation) pairs; expectation is None, ("returns", [rows]) or ("fails", text)."""
    out, current, expect = [], [], None
    for line in sql.split("\n"):
        returns = re.match(r"^-- returns (.*)$", line)
        fails = re.match(r"^-- fails with (.*)$", line)
        more = re.match(r"^--\s{2,}(\S.*)$", line)
        if returns:
            expect = ("returns", [returns.group(1)])
            out[-1] = (out[-1][0], expect)
        elif fails:
            out[-1] = (out[-1][0], ("fails", fails.group(1)))
        elif more and expect is not None and out and out[-1][1] is expect:
            expect[1].append(more.group(1))
        else:
            expect = None
            if line.strip().startswith("--") or not line.strip():
                continue
            current.append(line)
            if code_part(line).rstrip().endswith(";"):
                out.append(("\n".join(current), None))
                current = []
    assert not current, f"statement without a closing semicolon: {current}"
    return out


def cell(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def check_sql(dsn, sql, where):
    with psycopg.connect(dsn, autocommit=True) as c:
        for statement, expect in statements(sql):
            if expect and expect[0] == "fails":
                code, message = expect[1].split(": ", 1)
                with pytest.raises(psycopg.Error) as e:
                    c.execute(statement)
                assert (e.value.sqlstate, e.value.diag.message_primary) == (code, message), where
                continue
            cur = c.execute(statement)
            if not expect:
                continue
            rows = cur.fetchall()
            wanted = expect[1]
            if len(wanted) == 1 and len(rows) == 1 and len(rows[0]) == 1:
                got = rows[0][0]
                if isinstance(got, (dict, list)):
                    assert got == json.loads(wanted[0]), where
                else:
                    assert cell(got) == wanted[0], where
            else:
                got = [[cell(v) for v in row] for row in rows]
                assert got == [[x.strip() for x in w.split("|")] for w in wanted], where


def cluster_paths(text):
    if (PGHOST, PGPORT) != ("/tmp/ab_testing_pg", "5499"):
        text = re.sub(r"/tmp/ab_testing_pg\b", PGHOST, text).replace("5499", PGPORT)
    return text


@pytest.fixture(scope="module")
def shared():
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        for db in ["ab_readme", "ab_demo_py"]:
            c.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        for role in ROLES:
            c.execute(f"DROP ROLE IF EXISTS {role}")
    dsn = fresh_db("ab_readme")
    yield dsn
    drop_db("ab_readme")
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS ab_demo_py WITH (FORCE)")
        for role in ROLES:
            c.execute(f"DROP ROLE IF EXISTS {role}")


def start_two_arms(dsn, name):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SELECT ab_start_experiment(ab_create_experiment(%s))", (Jsonb({
            "name": name, "experiment_type": "prompt", "primary_metric": "resolution_rate",
            "variants": [{"name": "a", "is_control": True, "traffic_allocation": 50, "config": {"system_prompt": "A"}},
                         {"name": "b", "traffic_allocation": 50, "config": {"system_prompt": "B"}}]}),))


def run_python(dsn, text, where):
    start_two_arms(dsn, "readme python")
    with psycopg.connect(dsn) as conn:
        names = {"conn": conn, "experiment": "readme python", "user_id": "python-user", "attributes": {"loan_type": "fha"},
                 "message": "Can I refinance?", "DEFAULT_PROMPT": "default",
                 "llm": lambda prompt, message: SimpleNamespace(text="...", resolved=True)}
        exec(compile(text, where, "exec"), names)
        recorded = conn.execute("SELECT count(*) FROM ab_results r JOIN ab_experiments e ON e.id = r.experiment_id "
                                "WHERE e.name = 'readme python' AND r.user_id = 'python-user' "
                                "AND r.metric_value = 1").fetchone()[0]
    assert recorded == 1, where


def run_node(dsn, text, where):
    start_two_arms(dsn, "readme node")
    node_dir = os.path.join(ROOT, "examples", "node")
    if not os.path.isdir(os.path.join(node_dir, "node_modules", "pg")):
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--no-package-lock", "--silent"], cwd=node_dir,
                       check=True)
    program = f"""const {{ Client }} = require('pg');
(async () => {{
  const client = new Client({{ host: {json.dumps(PGHOST)}, port: {PGPORT}, user: 'postgres', database: 'ab_readme' }});
  await client.connect();
  const experiment = 'readme node', userId = 'node-user', message = 'Can I refinance?', DEFAULT_PROMPT = 'default';
  const llm = async (prompt, message) => ({{ text: '...', resolved: true }});
{text}
  await client.end();
}})().catch((e) => {{ console.error(e); process.exit(1); }});
"""
    with tempfile.NamedTemporaryFile("w", suffix=".js", dir=node_dir, delete=False) as f:
        f.write(program)
    try:
        out = subprocess.run(["node", f.name], capture_output=True, text=True, timeout=60)
    finally:
        os.unlink(f.name)
    assert out.returncode == 0, f"{where}: {out.stderr}"
    with psycopg.connect(dsn) as c:
        assert c.execute("SELECT count(*) FROM ab_results WHERE user_id = 'node-user' AND metric_value = 1"
                         ).fetchone()[0] == 1, where


def test_every_block_of_the_readme_runs_as_shown(shared):
    ran = {}
    for b in blocks():
        where = f"README.md line {b.line}"
        kind = (b.marker or b.lang).split(";")[0].split(",")[0].strip()
        if kind == "skip":
            assert ";" in b.marker and b.marker.split(";", 1)[1].strip(), f"{where}: a skipped block says why"
        elif b.marker is None and b.lang == "sql":
            check_sql(shared, b.text, where)
        elif b.marker in ("sql, in a new database", "sql, in a new database with the extension"):
            dsn = fresh_db("ab_readme_own", version=None) if b.marker.endswith("extension") else empty_db()
            check_sql(dsn, b.text, where)
            drop_db("ab_readme_own")
        elif kind == "signatures":
            with psycopg.connect(shared) as c:
                known = {r[0] for r in c.execute(
                    "SELECT p.proname::text FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid "
                    "WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'ab_testing') "
                    "UNION SELECT relname::text FROM pg_class WHERE relname LIKE 'ab\\_%'")}
            named = set(re.findall(r"\b(ab_\w+)\s*(?:\(|--)", b.text))
            assert named and named <= known, f"{where}: {sorted(named - known)} not in the extension"
        elif kind == "sh":
            for _ in range(2 if b.marker.startswith("sh, twice") else 1):
                run_sh(b.text, where)
        elif kind == "python":
            run_python(shared, b.text, where)
        elif kind == "node":
            run_node(shared, b.text, where)
        elif kind.startswith("output of ab_summary("):
            experiment = re.match(r"output of ab_summary\('(.*)'\)$", b.marker).group(1)
            with psycopg.connect(shared) as c:
                got = c.execute("SELECT ab_summary(%s)", (experiment,)).fetchone()[0]
            stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"
            assert re.sub(stamp, "<time>", got).rstrip("\n") == re.sub(stamp, "<time>", b.text), where
        elif kind == "same as examples/curl/quickstart.sh":
            script = open(os.path.join(ROOT, "examples", "curl", "quickstart.sh")).read()
            for endpoint in re.findall(r"\$API/(?:\d+/)?([a-z-]*)", b.text):
                assert f"/{endpoint}" in script or endpoint == "", f"{where}: {endpoint} not in quickstart.sh"
        else:
            pytest.fail(f"{where}: a ```{b.lang} block without a known readme-test marker ({b.marker!r})")
        ran[kind] = ran.get(kind, 0) + 1
    # The README keeps blocks of each kind; a marker typo would show up as a missing kind.
    for kind in ["sql", "sh", "python", "node", "signatures", "skip"]:
        assert ran.get(kind, 0) >= 1, (kind, ran)


def run_sh(text, where):
    """A shell block, in a process group of its own: whatever it leaves running (a server it
    started, when a later line failed) is stopped with it."""
    proc = subprocess.Popen(["bash", "-e", "-c", cluster_paths(text)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            for _ in range(50):  # until the group is gone (a server's port is free again)
                os.killpg(proc.pid, 0)
                time.sleep(0.1)
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, f"{where}:\n{out}\n{err}"


def empty_db():
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS ab_readme_own WITH (FORCE)")
        c.execute("CREATE DATABASE ab_readme_own")
    return conninfo("ab_readme_own")
