"""A plain (non-editable) `pip install .` into a fresh virtual environment gives a working
`cmr-bench` that does not read the checkout: plugins, manifests and published numbers are
installed with the package. (The editable install is what the rest of the suite runs on.)"""

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _active_site_packages() -> list[str]:
    """The site-packages of the interpreter running the tests (a venv's, not the base's)."""
    import site

    paths = list(site.getsitepackages())
    return [p for p in dict.fromkeys(paths + [p for p in sys.path if p.endswith("site-packages")]) if Path(p).is_dir()]


@pytest.fixture(scope="module")
def plain_install(tmp_path_factory):
    env_dir = tmp_path_factory.mktemp("venv")
    # The active environment's packages provide torch, setuptools & co. (no downloads): one plain
    # path line per site-packages, so its editable cmr-bench finder (a .pth of its own) stays off;
    # cmr-bench itself goes into the venv. Not the base interpreter's packages: in a user's venv
    # those lack torch, and an old setuptools without `wheel` cannot build (bdist_wheel).
    venv.EnvBuilder(system_site_packages=False, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    venv_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip()
    (Path(venv_site) / "active_env.pth").write_text("".join(f"{p}\n" for p in _active_site_packages()))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-build-isolation", str(REPO)]
        if _pip_has_python_flag() else
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--prefix", str(env_dir), str(REPO)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return env_dir


def _pip_has_python_flag() -> bool:
    out = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True).stdout
    major, minor = (int(x) for x in out.split()[1].split(".")[:2])
    return (major, minor) >= (22, 3)


def _run(env_dir, *args, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["PATH"] = f"{env_dir / 'bin'}:{env['PATH']}"
    return subprocess.run([str(env_dir / "bin" / "cmr-bench"), *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_plain_install_works_outside_the_checkout(plain_install, tmp_path):
    python = plain_install / "bin" / "python"
    where = subprocess.run([str(python), "-c", "import cmr_bench, cmr_bench.methods as m; print(cmr_bench.__file__); print(m.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert str(plain_install) in line and str(REPO) not in line, line
    proc = _run(plain_install, "list", "methods", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert {"cca", "random"} <= {m["name"] for m in json.loads(proc.stdout)}
    proc = _run(plain_install, "list", "datasets", "--json", cwd=tmp_path)
    assert {"wiki", "synthetic"} <= {d["name"] for d in json.loads(proc.stdout)}
    proc = _run(plain_install, "run", "--methods", "cca", "--dataset", "synthetic", "--results-dir", tmp_path / "r", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = _run(plain_install, "table", "--table", "2", "--dataset", "synthetic", "--results-dir", tmp_path / "r", "--out", tmp_path / "t", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def _readme() -> str:
    return (REPO / "README.md").read_text()


def test_readme_methods_table_is_generated_from_the_method_infos():
    """One source of truth: the README's table is `cmr-bench list methods --markdown`
    (regenerate it there after adding or changing a method)."""
    from cmr_bench.commands.listing import STATUS_MEANING, methods_markdown
    from cmr_bench.registry import all_methods, method_source

    rows = []
    for name, cls in all_methods().items():
        if not method_source(name).startswith("cmr_bench.methods"):
            continue  # plugins installed from elsewhere are not the README's
        assert cls.info.status in STATUS_MEANING, f"{name}: status {cls.info.status!r} is not one of {sorted(STATUS_MEANING)}"
        info = cls.info
        rows.append({"name": name, "family": cls.code_type, "paper": f"{info.full_name} ({info.venue} {info.year})",
                     "status": info.status, "supervision": info.supervision, "in_all": cls.in_all, "variants": list(cls.variants),
                     "source": method_source(name)})
    text = _readme()
    start = text.index("<!-- generated by `cmr-bench list methods --markdown`")
    block = text[text.index("\n", start) + 1:text.index("<!-- end of generated methods table -->")].rstrip("\n")
    assert block == methods_markdown(rows).rstrip("\n"), "README methods table is stale: run `cmr-bench list methods --update-readme`"


def _md_rows(text: str, header: str) -> dict[str, list[str]]:
    """{first cell: cells} of the Markdown table whose header line starts with `header`."""
    start = text.index(header)
    lines = text[start:].split("\n\n", 1)[0].splitlines()
    return {cells[0]: cells for cells in ([c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines[2:])}


@pytest.mark.parametrize("readme_header, table, table_header", [
    ("| Method | Default Img2Txt", "table2.md", "| Method "),
    ("| Method | I→T 16", "hash_mapall.md", "| Method "),
])
def test_readme_result_tables_copy_the_committed_tables(readme_header, table, table_header):
    """The README's compact tables show the cells of results/wiki/*.md as written there: made once
    from the CSV's 4-decimal values, some cells were rounded twice (LGCFL's 0.215 became 0.214)."""
    committed = _md_rows((REPO / "results" / "wiki" / table).read_text(), table_header)
    shown = _md_rows(_readme(), readme_header)
    assert shown and set(shown) <= set(committed)
    for method, cells in shown.items():
        missing = [c for c in cells[1:] if c and c[0].isdigit() and "/" not in c and c not in committed[method]]
        missing += [c for c in cells[1:] if c.startswith("**") and c not in committed[method]]
        assert not missing, f"README row {method!r}: {missing} not in results/wiki/{table}"


def _readme_block(heading: str) -> str:
    text = _readme()
    section = text[text.index(heading):]
    return section[section.index("```bash\n") + 8:section.index("\n```", section.index("```bash\n"))].strip()


@pytest.mark.slow
def test_readme_commands_work_verbatim_in_a_fresh_venv_from_a_clean_clone(tmp_path):
    """The README's install command (with the main job as a dry run) and its test command, as
    written, in a venv made by the active interpreter, in a clone of the committed tree. Needs
    the package index pip is configured with (torch 2.13.0 CPU; minutes)."""
    import shlex
    import shutil

    if not (REPO / ".git").exists() or not shutil.which("git"):
        pytest.skip("needs a git checkout")
    install = _readme_block("## Install and run the main job")
    tests = _readme_block("## Run the tests")
    assert install.startswith("pip install") and " cmr-bench run --methods all --dataset wiki" in install
    assert tests == "python -m pytest"
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PATH=f"{env_dir / 'bin'}:{env['PATH']}", VIRTUAL_ENV=str(env_dir), MPLBACKEND="Agg")
    data = os.environ.get("CMR_BENCH_DATA") or str(REPO.parent / "shared" / "data")
    (clone.parent / "shared").symlink_to(Path(data).resolve().parent) if not (clone.parent / "shared").exists() else None
    proc = subprocess.run(["bash", "-c", install + " --dry-run"], cwd=clone, env=env, capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "estimate: about" in proc.stdout
    proc = subprocess.run(shlex.split(tests), cwd=clone, env=env,
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_new_method_out_is_an_installable_plugin_and_check_plugin_takes_its_file(tmp_path, run_cli):
    code, out, err = run_cli("new-method", "my-thing", "--out", tmp_path / "pkg")
    assert code == 0, err
    assert (tmp_path / "pkg" / "pyproject.toml").is_file() and "pip install" in out
    code, out, err = run_cli("check-plugin", tmp_path / "pkg" / "my_thing.py")  # before it is installed
    assert code == 0 and "0 failed" in out, out + err
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site),
                           str(tmp_path / "pkg")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-m", "cmr_bench.cli", "list", "methods", "--json"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "entry point" in {m["name"]: m for m in json.loads(proc.stdout)}["my-thing"]["source"]
    code, _, err = run_cli("check-plugin", tmp_path / "pkg" / "nothing.py")
    assert code == 2 and "no such file" in err


def test_new_in_tree_method_says_it_joins_methods_all(tmp_path, run_cli, monkeypatch):
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "__init__.py").write_text("")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("new-method", "my-other")
    assert code == 0, err
    assert "joins `--methods all`" in out and "in_all = False" in out


def test_installed_package_finds_the_experiment_files(plain_install, tmp_path):
    """experiments/*.toml are installed as cmr_bench.experiments, not read from the checkout."""
    python = plain_install / "bin" / "python"
    code = "from cmr_bench.experiment import builtin_experiments as b; print(*sorted(b().items()), sep='\\n')"
    found = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert "'sdcmr-tip2024'" in found.stdout and "'hashing'" in found.stdout
    assert str(plain_install) in found.stdout and str(REPO) not in found.stdout
    proc = _run(plain_install, "reproduce", "hashing", "--dataset", "synthetic", "--results-dir", tmp_path / "r", "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "estimate: about" in proc.stdout
