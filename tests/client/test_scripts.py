"""The set-up scripts' refusals: each stops before doing anything, and says why."""
import os
import re
import shutil
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def install(tmp_path, version_line, **env):
    """scripts/install.sh with a pg_config that only knows its version (it must stop before
    building anything)."""
    fake = tmp_path / "pg_config"
    fake.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    fake.chmod(0o755)
    base = {k: v for k, v in os.environ.items() if k not in ("AB_PG_VERSION", "PG_CONFIG")}
    return subprocess.run([os.path.join(ROOT, "scripts", "install.sh")], env={**base, "PG_CONFIG": str(fake), **env},
                          capture_output=True, text=True, timeout=60)


def test_install_refuses_a_postgresql_it_does_not_support(tmp_path):
    out = install(tmp_path, "PostgreSQL 14.11")
    assert out.returncode == 1
    assert "PostgreSQL 14 is not supported (15, 16, 17 or 18)" in out.stderr
    out = install(tmp_path, "PostgreSQL 16.2", AB_PG_VERSION="18")
    assert out.returncode == 1 and "PG_CONFIG is PostgreSQL 16 but AB_PG_VERSION is 18" in out.stderr
    base = {k: v for k, v in os.environ.items() if k != "PG_CONFIG"}
    out = subprocess.run([os.path.join(ROOT, "scripts", "install.sh")], env={**base, "AB_PG_VERSION": "13"},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "PostgreSQL 13 is not supported" in out.stderr


def test_setup_says_when_rust_is_missing(tmp_path):
    # A PATH with bash and coreutils but no cargo, and a HOME without ~/.cargo.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ["bash", "id", "dirname", "grep", "sed", "env"]:
        os.symlink(shutil.which(tool), bin_dir / tool)
    out = subprocess.run(["bash", os.path.join(ROOT, "scripts", "setup.sh")],
                         env={"PATH": str(bin_dir), "HOME": str(tmp_path)}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "cargo and rustc are not on the PATH: install a stable Rust" in out.stderr


def test_readme_names_the_package_this_version_builds():
    version = re.search(r'^version = "([^"]+)"', open(os.path.join(ROOT, "Cargo.toml")).read(), re.M).group(1)
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    named = set(re.findall(r"postgresql-\d+-ab-testing_([0-9.]+)_amd64\.deb", readme))
    assert named == {version}


def test_no_text_in_the_repository_speaks_of_paths_outside_it():
    # .ci/run is the CI's own configuration: it says where the CI machines keep Citus's source.
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    outside = re.compile(r"\.\./shared|/work/|this project's machine|this machine|these machines|not built here")
    found = []
    for name in files:
        if name in (".ci/run", "tests/client/test_scripts.py") or name.endswith((".png", ".gz")):
            continue
        path = os.path.join(ROOT, name)
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        try:
            text = open(path, encoding="utf-8").read()
        except UnicodeDecodeError:
            continue
        found += [f"{name}: {m.group(0)}" for m in outside.finditer(text)]
    assert not found, found


def test_citus_build_says_where_its_source_must_come_from(tmp_path):
    # A pg_config whose library directory has no citus.so, and no CITUS_TARBALL.
    fake = tmp_path / "pg_config"
    fake.write_text(f"#!/bin/sh\necho '{tmp_path}'\n")
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CITUS_TARBALL"}
    out = subprocess.run([os.path.join(ROOT, "scripts", "citus-build.sh")], env={**env, "PG_CONFIG": str(fake)},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "set CITUS_TARBALL to the Citus 13.2.2 source tarball" in out.stderr
