"""The code blocks of the README and of every page under docs/, read from the files
themselves, run against the test cluster: the README first, then the pages in the order of
mkdocs.yml's nav.

Each fenced block runs according to the HTML comment on the line before it:

- no comment, `sql`: in one database with the extension (`quickstart`, which the README's
  Quick start creates), shared by every page's blocks in order;
- `sql, in a new database` / `sql, in a new database with the extension`: in a database of its own;
- `signatures`: every `ab_*` name in it is a function or relation of the extension;
- `sh`: with bash from the repository root, pointed at the test cluster (`sh, twice`: run
  twice, the second run proving it can be repeated; `sh, prints`: each whole-line `# `
  comment is output the block must print, in that order);
- `python; ...` / `node; ...`: a snippet, run with the names the comment lists defined;
- `output of ab_summary('x')`: the summary of that experiment, at that point, is this text;
- `output of examples/curl/quickstart.sh`: lines that script prints, in order (`...` stands
  for lines left out; tests/client/test_gateway.py runs the script and compares);
- `same as examples/curl/quickstart.sh`: every endpoint it calls is called by that script;
- `skip; reason`: not run, and the reason says why;
- `citus; NAME`: a step of docs/citus.md's runbook, run against a Citus cluster by
  tests/client/test_citus_ops.py.

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
# Roles and databases the blocks create, dropped before and after.
ROLES = ["webapp", "analysts", "experimenters", "app_gateway", "web_app", "ab_results"]
DATABASES = ["quickstart", "ab_demo_py", "app"]
GATEWAY_ETC = tempfile.mkdtemp(prefix="ab_docs_gateway_")


def pages():
    """README.md, then docs/ in the order of mkdocs.yml's nav."""
    nav = re.findall(r"^\s+- [^:]+: (\S+\.md)$", open(os.path.join(ROOT, "mkdocs.yml")).read(), re.M)
    return [README] + [os.path.join(ROOT, "docs", page) for page in nav]


def blocks(path=README):
    lines = open(path, encoding="utf-8").read().split("\n")
    found, i = [], 0
    while i < len(lines):
        fence = re.match(r"^```(\w+)$", lines[i])
        if fence:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            where = f"{os.path.relpath(path, ROOT)} line {i + 1}"
            assert lines[end] == "```", f"{where}: a block opens inside it at line {end + 1}"
            marker = re.match(r"^<!-- readme-test: (.*) -->$", lines[i - 1]) if i else None
            found.append(SimpleNamespace(lang=fence.group(1), marker=marker.group(1) if marker else None,
                                         text="\n".join(lines[i + 1:end]), line=i + 1, where=where))
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
    return text.replace("/etc/ab-gateway", GATEWAY_ETC)


def doc_block(marker):
    """The text of the one block of the README or docs/ with this marker."""
    found = [b for page in pages() for b in blocks(page) if b.marker == marker]
    assert len(found) == 1, (marker, [b.where for b in found])
    return found[0].text


def cleanup():
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        for db in DATABASES:
            c.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        for role in ROLES:
            c.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture(scope="module")
def shared():
    """The Quick start's database: created by the README's first shell block."""
    cleanup()
    yield conninfo("quickstart")
    cleanup()


def start_two_arms(dsn, name):
    """A running experiment (the same snippet can stand on several pages)."""
    with psycopg.connect(dsn, autocommit=True) as c:
        if c.execute("SELECT 1 FROM ab_experiments WHERE name = %s", (name,)).fetchone():
            return
        c.execute("SELECT ab_start_experiment(ab_create_experiment(%s))", (Jsonb({
            "name": name, "experiment_type": "prompt", "primary_metric": "resolution_rate",
            "variants": [{"name": "a", "is_control": True, "traffic_allocation": 50, "config": {"system_prompt": "A"}},
                         {"name": "b", "traffic_allocation": 50, "config": {"system_prompt": "B"}}]}),))


def recorded(dsn, experiment, user):
    with psycopg.connect(dsn) as c:
        return c.execute("SELECT count(*) FROM ab_results r JOIN ab_experiments e ON e.id = r.experiment_id "
                         "WHERE e.name = %s AND r.user_id = %s AND r.metric_value = 1", (experiment, user)).fetchone()[0]


def run_python(dsn, text, where):
    start_two_arms(dsn, "readme python")
    before = recorded(dsn, "readme python", "python-user")
    with psycopg.connect(dsn) as conn:
        names = {"conn": conn, "experiment": "readme python", "user_id": "python-user", "attributes": {"loan_type": "fha"},
                 "message": "Can I refinance?", "DEFAULT_PROMPT": "default",
                 "llm": lambda prompt, message: SimpleNamespace(text="...", resolved=True)}
        exec(compile(text, where, "exec"), names)
    assert recorded(dsn, "readme python", "python-user") == before + 1, where


def run_node(dsn, text, where):
    start_two_arms(dsn, "readme node")
    before = recorded(dsn, "readme node", "node-user")
    node_dir = os.path.join(ROOT, "examples", "node")
    if not os.path.isdir(os.path.join(node_dir, "node_modules", "pg")):
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--no-package-lock", "--silent"], cwd=node_dir,
                       check=True)
    program = f"""const {{ Client }} = require('pg');
(async () => {{
  const client = new Client({{ host: {json.dumps(PGHOST)}, port: {PGPORT}, user: 'postgres', database: 'quickstart' }});
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
    assert recorded(dsn, "readme node", "node-user") == before + 1, where


def test_every_block_of_the_readme_and_the_docs_runs_as_shown(shared):
    ran = {}
    for page in pages():
        for b in blocks(page):
            run_block(shared, b, ran)
    # The pages keep blocks of each kind; a marker typo would show up as a missing kind.
    for kind in ["sql", "sh", "python", "node", "signatures", "skip"]:
        assert ran.get(kind, 0) >= 1, (kind, ran)


def run_block(shared, b, ran):
    where = b.where
    kind = (b.marker or b.lang).split(";")[0].split(",")[0].strip()
    flags = [f.strip() for f in (b.marker or "").split(";")[0].split(",")[1:]]
    if kind == "skip":
        assert ";" in b.marker and b.marker.split(";", 1)[1].strip(), f"{where}: a skipped block says why"
    elif kind == "citus":
        assert b.where.startswith("docs/citus.md"), f"{where}: runbook blocks belong in docs/citus.md"
        assert re.match(r"citus; [a-z-]+$", b.marker), f"{where}: a runbook block is named"
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
        for flag in flags:
            assert flag.split(" ")[0] in ("twice", "prints"), f"{where}: unknown flag {flag!r}"
        for _ in range(2 if any(f.startswith("twice") for f in flags) else 1):
            out = run_sh(b.text, where)
            if any(f.startswith("prints") for f in flags):
                expected = [line[2:] for line in b.text.split("\n") if line.startswith("# ")]
                assert expected, f"{where}: a block that prints shows what"
                at = 0
                for line in expected:
                    found = out.find(line, at)
                    assert found >= 0, f"{where}: {line!r} not printed (after offset {at}):\n{out}"
                    at = found + len(line)
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
    elif kind == "output of examples/curl/quickstart.sh":
        pass  # tests/client/test_gateway.py runs the script and compares its output with this block
    elif kind == "same as examples/curl/quickstart.sh":
        script = open(os.path.join(ROOT, "examples", "curl", "quickstart.sh")).read()
        for endpoint in re.findall(r"\$API/(?:\d+/)?([a-z-]*)", b.text):
            assert f"/{endpoint}" in script or endpoint == "", f"{where}: {endpoint} not in quickstart.sh"
    else:
        pytest.fail(f"{where}: a ```{b.lang} block without a known readme-test marker ({b.marker!r})")
    ran[kind] = ran.get(kind, 0) + 1


def run_sh(text, where):
    """A shell block, in a process group of its own: whatever it leaves running (a server it
    started, when a later line failed) is stopped with it."""
    proc = subprocess.Popen(["bash", "-e", "-c", cluster_paths(text)], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
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
    return out


def empty_db():
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS ab_readme_own WITH (FORCE)")
        c.execute("CREATE DATABASE ab_readme_own")
    return conninfo("ab_readme_own")


def slug(heading):
    """The anchor GitHub and MkDocs give a heading."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_every_relative_link_and_anchor_of_the_readme_and_the_docs_resolves():
    for page in pages():
        text = open(page, encoding="utf-8").read()
        prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
        for target in re.findall(r"\]\(([^)\s]+)\)", prose):
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            where = f"{os.path.relpath(page, ROOT)}: {target}"
            assert os.path.exists(file), f"{where}: no such file"
            if anchor:
                body = re.sub(r"^```.*?^```", "", open(file, encoding="utf-8").read(), flags=re.S | re.M)
                headings = {slug(h) for h in re.findall(r"^#+ (.*)$", body, re.M)}
                assert anchor in headings, f"{where}: no such heading"


def test_a_first_variant_and_a_first_analysis_within_the_readmes_first_100_lines():
    lines = open(README, encoding="utf-8").read().split("\n")
    first = {name: next(i + 1 for i, line in enumerate(lines) if line.startswith(f"SELECT {name}(")
                        or f" {name}(" in line and not line.startswith(name))
             for name in ["ab_get_variant", "ab_analyze"]}
    assert max(first.values()) <= 100, first


def documented_keys(table):
    """The keys of the table of docs/definitions.md marked `<!-- keys: table -->`."""
    text = open(os.path.join(ROOT, "docs", "definitions.md"), encoding="utf-8").read()
    rows = text.split(f"<!-- keys: {table} -->\n", 1)[1].split("\n\n", 1)[0].split("\n")[2:]
    return {key for row in rows for key in re.findall(r"`(\w+)`", row.split("|")[1])}


def accepted_keys(dsn, definition):
    """The keys the parser accepts where `definition` has the unknown key `zzz`, as its error lists them."""
    with psycopg.connect(dsn, autocommit=True) as c:
        with pytest.raises(psycopg.errors.InvalidParameterValue) as e:
            c.execute("SELECT ab_create_experiment(%s)", (Jsonb(definition),))
    message = e.value.diag.message_primary
    assert "unknown field `zzz`" in message, message
    return set(re.findall(r"`(\w+)`", message.split("expected", 1)[1]))


def test_every_key_the_parser_accepts_is_documented_and_every_documented_key_is_accepted():
    dsn = fresh_db("ab_readme_keys")
    try:
        def base(**extra):
            return {"name": "keys", "experiment_type": "prompt", "primary_metric": "m",
                    "variants": [{"name": "a", "is_control": True, "traffic_allocation": 50},
                                 {"name": "b", "traffic_allocation": 50}], **extra}
        cases = {
            "definition": {**base(), "zzz": 1},
            "variant": base(variants=[{"name": "a", "is_control": True, "traffic_allocation": 50, "zzz": 1},
                                      {"name": "b", "traffic_allocation": 50}]),
            "metric": base(metrics={"m": {"zzz": 1}}),
            "cap": base(metrics={"m": {"cap": {"zzz": 1}}}),
            "prior": base(metrics={"m": {"prior": {"zzz": 1}}}),
            "covariate": base(metrics={"m": {"covariate": {"zzz": 1}}}),
            "funnel": base(metrics={"m": {"funnel": {"zzz": 1}}}),
            "retention": base(metrics={"m": {"retention": {"zzz": 1}}}),
            "stratum": base(metrics={"m": {"covariates": [{"zzz": 1}]}}),
            "layer": base(layer={"name": "l", "zzz": 1}),
            "allocation": base(allocation={"mode": "fixed", "zzz": 1}),
        }
        for table, definition in cases.items():
            assert documented_keys(table) == accepted_keys(dsn, definition), table
        # A source's keys are one list in ab_core (its error names only the nearest one).
        source_rs = open(os.path.join(ROOT, "ab_core", "src", "source.rs"), encoding="utf-8").read()
        keys = re.search(r"pub const SOURCE_KEYS: &\[&str\] = &\[([^\]]*)\]", source_rs).group(1)
        assert documented_keys("source") == set(re.findall(r'"(\w+)"', keys))
    finally:
        drop_db("ab_readme_keys")
