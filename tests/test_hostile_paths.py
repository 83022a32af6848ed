"""Issue 18, class 1-3: no user-controlled string makes cmr-bench write, read or delete
outside its folders. Every case runs in temp folders only: a "victim" folder beside the data
root and the results dir must be byte-for-byte unchanged afterwards, and nothing may appear
outside the folders a command owns."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest

from conftest import sha256, write_user_dataset
from test_bad_input import assert_one_line, snapshot


@pytest.fixture
def world(tmp_path):
    """tmp/{data,results,victim}: victim holds files an attacker would like to replace."""
    for name in ("data", "results", "victim"):
        (tmp_path / name).mkdir()
    (tmp_path / "victim" / ".bashrc").write_text("echo safe\n")
    return tmp_path


def everything(root: Path) -> dict:
    return snapshot(root)


def _manifest_with(folder: Path, old: str, new: str) -> Path:
    manifest = write_user_dataset(folder)
    text = manifest.read_text()
    assert old in text
    manifest.write_text(text.replace(old, new))
    return manifest


BAD_NAMES = ["../../../escapes/x", "../x", "a/b", "/abs/x", ".hidden", "..", "x" * 300, "a\\u0000b", "tab\\tname", "~user"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_dataset_name_that_is_not_a_plain_name_is_refused_before_anything_is_written(world, run_cli, bad):
    manifest = _manifest_with(world / "data" / "mine", 'name = "mydata"', f'name = "{bad}"')
    before = everything(world)
    code, out, err = run_cli("--data-root", world / "data", "run", "--methods", "cca", "--dataset", manifest,
                             "--results-dir", world / "results", "--no-progress")
    assert_one_line(code, err, "dataset name")
    assert everything(world) == before  # no run folder, no split cache, nothing anywhere


@pytest.mark.parametrize("bad", ["../../p", "a/b", ".p", "p" * 120])
def test_protocol_name_that_is_not_a_plain_name_is_refused(world, run_cli, bad):
    manifest = _manifest_with(world / "data" / "mine", "[protocols.real]", f'[protocols."{bad}"]')
    before = everything(world)
    code, out, err = run_cli("run", "--methods", "cca", "--dataset", manifest, "--protocol", bad,
                             "--results-dir", world / "results", "--no-progress")
    assert_one_line(code, err, "protocol name")
    assert everything(world) == before


@pytest.mark.parametrize("bad", ["../../victim/.bashrc", "/etc/passwd", "sub/../../x.npz", "a\\\\b.npz", ".hidden.npz", ""])
def test_manifest_file_path_outside_its_folder_is_a_malformed_manifest(world, run_cli, bad):
    manifest = _manifest_with(world / "data" / "mine", 'path = "features.npz"', f'path = "{bad}"')
    manifest.write_text(manifest.read_text().replace('file = "features.npz"', f'file = "{bad}"'))
    for cmd in (["data", "info", manifest], ["data", "verify", manifest], ["data", "fetch", manifest, "--base-url", "http://127.0.0.1:9"],
                ["data", "import", manifest, world / "data"]):
        before = everything(world)
        code, out, err = run_cli(*cmd)
        assert_one_line(code, err, "malformed manifest")
        assert everything(world) == before, cmd


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    servers = []

    def start(folder: Path) -> str:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def test_fetch_never_writes_through_a_symlinked_subfolder(world, run_cli, serve):
    """A dataset folder whose subfolder is a link out of it: fetch refuses before writing,
    even when the server serves bytes that match the recorded checksum."""
    served = world / "served"
    write_user_dataset(served / "sub")
    digest = sha256(served / "sub" / "features.npz")
    user = world / "data" / "mine"
    manifest = _manifest_with(user, 'path = "features.npz"', 'path = "sub/features.npz"')
    manifest.write_text(manifest.read_text().replace('file = "features.npz"', 'file = "sub/features.npz"'))
    assert digest in manifest.read_text()  # the server's bytes would pass the checksum
    (user / "features.npz").unlink()
    os.symlink(world / "victim", user / "sub")
    before = everything(world / "victim")
    code, out, err = run_cli("data", "fetch", manifest, "--base-url", serve(served), "--no-progress")
    assert_one_line(code, err, "outside")
    assert everything(world / "victim") == before


def test_fetch_refuses_a_folder_outside_the_root_and_the_manifest_folder(world, run_cli, serve):
    served = world / "served"
    write_user_dataset(served)
    manifest = world / "data" / "mine.toml"
    manifest.write_text(f'folder = "{world / "victim"}"\n' + (served / "manifest.toml").read_text())
    before = everything(world / "victim")
    code, out, err = run_cli("--data-root", world / "data", "data", "fetch", manifest, "--base-url", serve(served), "--no-progress")
    assert_one_line(code, err, "refusing to fetch")
    assert everything(world / "victim") == before
    code, out, err = run_cli("--data-root", world / "data", "data", "import", manifest, served)
    assert_one_line(code, err, "refusing to import")
    assert everything(world / "victim") == before


def test_fetch_keeps_downloads_in_the_dataset_folder_and_leaves_no_temp(world, run_cli, serve):
    served = world / "served"
    write_user_dataset(served)
    user = world / "data" / "mine"
    user.mkdir(parents=True)
    (user / "manifest.toml").write_text((served / "manifest.toml").read_text())
    code, out, err = run_cli("data", "fetch", user / "manifest.toml", "--base-url", serve(served), "--no-progress")
    assert code == 0, out + err
    assert sorted(p.name for p in user.iterdir()) == ["features.npz", "manifest.toml"]


def test_import_does_not_read_through_a_symlinked_subfolder_of_the_source(world, run_cli):
    src = world / "src"
    write_user_dataset(src)
    secret = world / "victim" / "features.npz"
    os.replace(src / "features.npz", secret)
    os.symlink(world / "victim", src / "sub")
    manifest = _manifest_with(world / "data" / "mine", 'path = "features.npz"', 'path = "sub/features.npz"')
    manifest.write_text(manifest.read_text().replace('file = "features.npz"', 'file = "sub/features.npz"'))
    (world / "data" / "mine" / "features.npz").unlink()
    code, out, err = run_cli("data", "import", manifest, src)
    assert_one_line(code, err, "outside")
    assert not (world / "data" / "mine" / "sub").exists()


def test_a_planted_symlink_at_the_temp_name_is_not_followed(world, serve, monkeypatch):
    from cmr_bench.data.fetch import download

    served = world / "served"
    write_user_dataset(served)
    dest = world / "data" / "features.npz"
    os.symlink(world / "victim" / ".bashrc", dest.with_name(f".{dest.name}.part-{os.getpid()}"))
    download(serve(served) + "/features.npz", dest, sha256(served / "features.npz"), progress=False)
    assert (world / "victim" / ".bashrc").read_text() == "echo safe\n"
    assert sha256(dest) == sha256(served / "features.npz")


def test_import_does_not_copy_through_a_planted_temp_link(world, run_cli):
    src = world / "src"
    manifest = write_user_dataset(src)
    root = world / "data"
    (root / "mydata").mkdir()
    (root / "mydata.toml").write_text('folder = "mydata"\n' + manifest.read_text())
    os.symlink(world / "victim" / ".bashrc", root / "mydata" / f".features.npz.part-{os.getpid()}")
    code, out, err = run_cli("--data-root", root, "data", "import", "mydata", src)
    assert code == 0, out + err
    assert (world / "victim" / ".bashrc").read_text() == "echo safe\n"


# --- runs clean: only what the store provably wrote ----------------------------------------


@pytest.fixture
def store_with_thesis(tmp_path, run_cli):
    results = tmp_path / "results"
    assert run_cli("run", "--methods", "cca", "--dataset", "synthetic", "--results-dir", results, "--no-progress")[0] == 0
    thesis = results / "proj" / "notes" / "v1-0123456789" / "seed-1"
    thesis.mkdir(parents=True)
    (thesis / "thesis.tex").write_text("years of work")
    (results / "proj" / "notes" / "v1-0123456789" / ".seed-2.tmp-1-1").mkdir()
    (results / "proj" / "notes" / "v1-0123456789" / ".seed-2.tmp-1-1" / "draft.tex").write_text("more work")
    outside = tmp_path / "outside"
    (outside / "seed-0").mkdir(parents=True)
    (outside / "seed-0" / "cmr-bench-run").write_text("{}")  # even a marker behind a link is never followed
    (outside / "seed-0" / "precious").write_text("x")
    cfg = next(results.glob("synthetic/real/cca/*"))
    os.symlink(outside / "seed-0", cfg / "seed-9")
    return results, outside


def test_runs_clean_removes_nothing_it_cannot_prove_is_a_run(store_with_thesis, run_cli):
    results, outside = store_with_thesis
    before = everything(results.parent)
    dry_code, dry_out, _ = run_cli("runs", "clean", "--results-dir", results, "--dry-run")
    assert dry_code == 0
    assert everything(results.parent) == before
    assert "would remove 0 item(s)" in dry_out
    code, out, err = run_cli("runs", "clean", "--results-dir", results)
    assert code == 0, err
    assert everything(results.parent) == before
    assert (results / "proj" / "notes" / "v1-0123456789" / "seed-1" / "thesis.tex").read_text() == "years of work"
    assert (outside / "seed-0" / "precious").exists()
    assert "left alone" in out


def test_runs_clean_dry_run_prints_exactly_what_clean_removes(tmp_path, run_cli):
    results = tmp_path / "results"
    assert run_cli("run", "--methods", "cca", "--dataset", "synthetic", "--seeds", "0,1", "--results-dir", results, "--no-progress")[0] == 0
    folders = sorted(p.parent for p in results.rglob("run.json"))
    (folders[0] / "metrics.json").write_text("{}")  # corrupt, but provably a run: removable
    dry = run_cli("runs", "clean", "--results-dir", results, "--dry-run")[1]
    real = run_cli("runs", "clean", "--results-dir", results)[1]
    assert dry.replace("would remove", "removed") == real
    assert not folders[0].exists() and folders[1].exists()


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", "/etc"])
def test_dataset_arguments_of_runs_and_table_are_plain_names(tmp_path, run_cli, bad):
    results = tmp_path / "results"
    results.mkdir()
    before = everything(tmp_path)
    for cmd in (["runs", "list", "--results-dir", results, "--dataset", bad],
                ["runs", "clean", "--results-dir", results, "--dataset", bad],
                ["table", "--table", "2", "--dataset", bad, "--results-dir", results, "--out", tmp_path / "t"]):
        code, out, err = run_cli(*cmd)
        assert_one_line(code, err)
        assert everything(tmp_path) == before, cmd


def test_run_folder_names_are_checked_components():
    from cmr_bench.errors import CmrBenchError
    from cmr_bench.runner.spec import RunSpec

    ok = RunSpec("ds", "real", "cca", 0)
    assert ok.folder(Path("/r")).parent.parent.parent.parent.parent == Path("/r")
    for field, value in (("dataset", "../x"), ("protocol", "a/b"), ("method", ".."), ("method", "x\x00")):
        with pytest.raises(CmrBenchError):
            RunSpec(**{"dataset": "ds", "protocol": "real", "method": "cca", "seed": 0, field: value}).folder(Path("/r"))


@pytest.mark.parametrize("text", ["../../x", "a/b", "", ".", "x" * 500, "é", "a\x00b", "CON", "set-reg=1/../.."])
def test_safe_component_maps_anything_to_one_plain_unique_component(text):
    from cmr_bench.paths import check_component, safe_component

    out = safe_component(text)
    assert check_component(out, "x") == out and "/" not in out and len(out) <= 60
    assert safe_component(text + "!") != out


def test_a_symlinked_folder_in_a_results_dir_does_not_lead_runs_outside(tmp_path, run_cli):
    results, elsewhere = tmp_path / "results", tmp_path / "elsewhere"
    results.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, results / "synthetic")  # e.g. a results folder received from someone
    code, out, err = run_cli("run", "--methods", "cca", "--dataset", "synthetic", "--results-dir", results, "--no-progress")
    assert_one_line(code, err, "resolves outside")
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("cmd", [["run", "--methods", "cca", "--dataset", "synthetic", "--no-progress"],
                                 ["table", "--table", "2", "--dataset", "synthetic"], ["runs", "list"], ["runs", "clean"]])
def test_a_results_dir_the_os_refuses_is_one_line(tmp_path, run_cli, cmd):
    code, out, err = run_cli(*cmd, "--results-dir", tmp_path / ("x" * 300))
    assert_one_line(code, err)
    assert list(tmp_path.iterdir()) == []
