"""The results pages of ab-gateway, opened in a real browser (headless Chromium) against the
test cluster, as a role with the analyst's grants: the numbers in the tables are ab_analyze's,
a sample ratio mismatch is flagged, hostile names render as text, and nothing is written."""
import html
import math
import os
import random
import re
import subprocess
import urllib.error
import urllib.request

import psycopg
import pytest
from psycopg.types.json import Jsonb

from conftest import CITUS, conninfo
from test_gateway import start_gateway, stop_gateway
from test_operations import drop_db, fresh_db

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DB = "ab_results_page"
READER = "ab_results_page_reader"
HOSTILE = "<script>document.title='pwned'</script><b>bold</b> & \"quoted\""
SHOTS = os.path.join(ROOT, "target", "screenshots")
# Also against a Citus coordinator (AB_CITUS=1).
pytestmark = pytest.mark.citus


def two_arms(name, **extra):
    return {"name": name, "experiment_type": "ui", "primary_metric": "converted", "min_sample_size": 50,
            "metrics": {"converted": {"type": "binary"}, "latency": {"direction": "lower", "margin": 300}},
            "variants": [{"name": "control", "is_control": True, "traffic_allocation": 50},
                         {"name": "treatment", "traffic_allocation": 50}], **extra}


def fill(c, name, users, lift, seed):
    rng = random.Random(seed)
    for i in range(users):
        user = f"{seed}-user-{i}"
        v = c.execute("SELECT ab_get_variant(%s, %s) ->> 'variant'", (name, user)).fetchone()[0]
        p = 0.3 + (lift if v == "treatment" else 0)
        c.execute("SELECT ab_record_result(%s, 'converted', %s, %s)", (name, int(rng.random() < p), user))
        c.execute("SELECT ab_record_result(%s, 'latency', %s, %s)",
                  (name, rng.gauss(800 + (150 if v == "treatment" else 0), 100), user))


@pytest.fixture(scope="module")
def site():
    with psycopg.connect(conninfo("postgres"), autocommit=True) as c:
        if not c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (READER,)).fetchone():
            c.execute(f"CREATE ROLE {READER} LOGIN")
    fresh_db(DB)
    ids = {}
    with psycopg.connect(conninfo(DB), autocommit=True) as c:
        c.execute("SELECT ab_grant_analyst(%s)", (READER,))
        for name, salt, lift in [("checkout button", "page-a", 0.12), ("broken split", "page-b", 0.0),
                                 (HOSTILE, "page-c", 0.0)]:
            ids[name] = c.execute("SELECT ab_create_experiment(%s)", (Jsonb(two_arms(name, salt=salt)),)).fetchone()[0]
            c.execute("SELECT ab_start_experiment(%s)", (ids[name],))
            fill(c, name, 600, lift, salt)
        # A bandit with one change of weights.
        name = "prompt bandit"
        ids[name] = c.execute("SELECT ab_create_experiment(%s)", (Jsonb(two_arms(
            name, salt="page-d", allocation={"mode": "bandit", "burn_in_users": 20})),)).fetchone()[0]
        c.execute("SELECT ab_start_experiment(%s)", (ids[name],))
        fill(c, name, 300, 0.2, "page-d")
        c.execute("SELECT * FROM ab_reweight(%s, force => true)", (name,))
        fill(c, name, 300, 0.2, "page-d2")
        # A broken split: half of one variant's users lost after assignment.
        c.execute("DELETE FROM ab_assignments a USING ab_variants v WHERE v.id = a.variant_id "
                  "AND v.name = 'treatment' AND a.experiment_id = %s AND hashtext(a.user_id) %% 2 = 0",
                  (ids["broken split"],))
    proc, base = start_gateway(READER, DB)
    yield base, ids
    stop_gateway(proc)
    drop_db(DB)


def browser(url, screenshot=None):
    """The page as Chromium rendered it (the DOM after parsing, styles and any script)."""
    args = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1100,1600"]
    if screenshot:
        os.makedirs(SHOTS, exist_ok=True)
        shot = subprocess.run(args + [f"--screenshot={os.path.join(SHOTS, screenshot)}", url],
                              capture_output=True, text=True, timeout=120)
        assert shot.returncode == 0, shot.stderr
        assert os.path.getsize(os.path.join(SHOTS, screenshot)) > 10000
    out = subprocess.run(args + ["--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def inner(dom, pattern):
    m = re.search(pattern, dom, re.S)
    assert m, pattern
    return m.group(1)


def insights():
    with psycopg.connect(conninfo(DB)) as c:
        return c.execute("SELECT count(*) FROM ab_insights").fetchone()[0]


def test_the_list_shows_every_experiment_flags_the_mismatch_and_escapes_names(site):
    base, ids = site
    dom = browser(base + "/", screenshot="results-list.png")
    assert "<title>Experiments</title>" in dom
    rows = re.findall(r'<tr data-id="(\d+)">(.*?)</tr>', dom, re.S)
    assert sorted(int(i) for i, _ in rows) == sorted(ids.values())
    by_id = {int(i): row for i, row in rows}
    assert "srm-warning" in by_id[ids["broken split"]]
    assert "srm-warning" not in by_id[ids["checkout button"]]
    link = inner(by_id[ids[HOSTILE]], r'<a href="/experiments/\d+">(.*?)</a>')
    assert html.unescape(link) == HOSTILE and "<" not in link
    assert "ship" in by_id[ids["checkout button"]]
    assert "<form" not in dom and "<script" not in dom


def test_the_experiment_page_shows_ab_analyze_s_numbers(site):
    base, ids = site
    before = insights()
    dom = browser(f"{base}/experiments/{ids['checkout button']}", screenshot="results-experiment.png")
    assert insights() == before, "the page must not store its analysis"
    with psycopg.connect(conninfo(DB)) as c:
        rows = c.execute("SELECT metric_name, variant, users, mean, diff, ci_lower, ci_upper, relative_lift, p_value, "
                         "p_value_adjusted, chance_to_beat_control FROM ab_analyze(%s)",
                         (ids["checkout button"],)).fetchall()
    cols = ["mean", "diff", "ci_lower", "ci_upper", "relative_lift", "p_value", "p_value_adjusted",
            "chance_to_beat_control"]
    checked = 0
    for metric, variant, users, *values in rows:
        table = inner(dom, rf'<table class="analysis" data-metric="{metric}">(.*?)</table>')
        row = inner(table, rf'<tr data-variant="{variant}">(.*?)</tr>')
        assert f'data-col="users" data-value="{users}"' in row
        for col, v in zip(cols, values):
            cell = re.search(rf'data-col="{col}"(?: data-value="([^"]*)")?>([^<]*)</td>', row)
            assert cell, (metric, variant, col)
            if v is None:
                assert cell.group(1) is None
                continue
            # Per-user rows are summed in the order the plan reads them (a sequential or index
            # scan, chosen anew as statistics change; under Citus, shards' partial sums combine
            # as they arrive): the last bits may differ from one analysis to the next, and a
            # tail probability (a p-value or chance near 1e-70) magnifies them.
            rel = 1e-12 if abs(v) > 1e-6 else 1e-9
            assert math.isclose(float(cell.group(1)), v, rel_tol=rel, abs_tol=1e-300), (metric, variant, col)
            shown = cell.group(2)
            if col == "relative_lift":
                assert shown == f"{v * 100:+.1f}%"
            else:
                assert abs(float(shown) - v) <= 5e-5 + 5e-3 * abs(v), (col, shown, v)
            checked += 1
    assert checked >= 10
    assert "better" in inner(dom, r'<table class="analysis" data-metric="converted">(.*?)</table>')
    guardrails = inner(dom, r'<ul id="guardrails">(.*?)</ul>')
    assert "latency is significantly worse under treatment" in guardrails
    # Worse, but within its margin: the guardrail passes, and the winner may ship.
    assert "latency under treatment: shown to be no more than 300 higher than the control's (non-inferiority p = " in guardrails
    assert "Recommendation: ship" in inner(dom, r'<p id="recommendation">(.*?)</p>')
    assert f'<img src="/experiments/{ids["checkout button"]}/plot.svg"' in dom
    assert f'href="/api/v1/experiments/{ids["checkout button"]}/analyze"' in dom
    assert "srm-warning" not in dom and "<form" not in dom
    with urllib.request.urlopen(f"{base}/experiments/{ids['checkout button']}/plot.svg") as r:
        assert r.headers["Content-Type"] == "image/svg+xml" and r.read().startswith(b"<svg")


def test_the_mismatch_and_the_hostile_name_on_their_pages(site):
    base, ids = site
    dom = browser(f"{base}/experiments/{ids['broken split']}")
    assert "Sample ratio mismatch" in inner(dom, r'<p class="warn srm-warning">(.*?)</p>')
    assert "sample ratio mismatch" in inner(dom, r'<p id="recommendation">(.*?)</p>')
    dom = browser(f"{base}/experiments/{ids[HOSTILE]}")
    title = inner(dom, r"<title>(.*?)</title>")
    assert html.unescape(title) == HOSTILE, "the title is the name as text, and no script changed it"
    heading = inner(dom, r'<h1 id="name">(.*?)</h1>')
    assert html.unescape(heading) == HOSTILE and "<" not in heading
    assert "<b>bold</b>" not in dom


def test_a_bandit_page_shows_its_weight_history(site):
    base, ids = site
    dom = browser(f"{base}/experiments/{ids['prompt bandit']}")
    table = inner(dom, r'<table id="weights">(.*?)</table>')
    rows = re.findall(r"<tr><td class=\"n\">(\d+)</td><td>(.*?)</td>(.*?)</tr>", table, re.S)
    with psycopg.connect(conninfo(DB)) as c:
        stored = c.execute("SELECT period, weights, posterior FROM ab_allocations WHERE experiment_id = %s ORDER BY period",
                           (ids["prompt bandit"],)).fetchall()
    assert [int(r[0]) for r in rows] == [p for p, _, _ in stored] == [0, 1]
    for (_, _, cells), (_, weights, posterior) in zip(rows, stored):
        shown = re.findall(r'<td class="n">([\d.]+)%', cells)
        assert [float(x) for x in shown] == [weights["control"], weights["treatment"]]
        assert ("best" in cells) == bool(posterior)
    assert "Bandit on converted" in dom
    dom_rows = re.findall(r'<table class="analysis" data-metric="converted">(.*?)</table>', dom, re.S)
    assert dom_rows, "the analysis is shown"


def test_an_unknown_experiment_is_a_404_page(site):
    base, _ = site
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(base + "/experiments/999999")
    assert e.value.code == 404
    assert "experiment with id 999999 does not exist" in e.value.read().decode()
