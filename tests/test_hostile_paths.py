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
from registering import registered


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


# --- issue 30: every writer refuses links, reads only regular files, deletes only its own ----
# One class per test: a planted link at a temporary or final name, or a linked output folder,
# must never lead a write outside; the victim file stays byte-for-byte the same.


@pytest.fixture(scope="module")
def cca_store(tmp_path_factory):
    from cmr_bench.cli import main

    results = tmp_path_factory.mktemp("store") / "runs"
    assert main(["run", "--methods", "cca", "--dataset", "synthetic", "--results-dir", str(results), "--no-progress"]) == 0
    return results


def _tuned(out):
    from cmr_bench.runner.tuned import write_tuned

    write_tuned({"method": "cca", "dataset": "synthetic", "bits": None, "value": 0.5, "trials": 1, "config": {"reg": 0.01}}, out)
    return 0, "", ""


# writer -> (how to call it with an output folder, the files it writes there, the old temporary names)
WRITERS = {
    "table": (lambda run_cli, store, out: run_cli("table", "--table", "2", "--dataset", "synthetic", "--results-dir", store,
                                                  "--out", out),
              ["table2.csv", "table2.md", "table2.tex"], ["table2.csv.tmp", "table2.md.tmp", "table2.tex.tmp"]),
    "plot": (lambda run_cli, store, out: run_cli("plot", "pr", "--dataset", "synthetic", "--results-dir", store,
                                                 "--out", out / "fig_pr.png"),
             ["fig_pr.png"], ["fig_pr.tmp.png"]),
    "report": (lambda run_cli, store, out: run_cli("report", "--dataset", "synthetic", "--results-dir", store, "--out", out),
               ["report.html", "report.md"], [".report.html.tmp", ".report.md.tmp"]),
    "tuned config": (lambda run_cli, store, out: _tuned(out),
                     ["synthetic/cca.toml"], ["synthetic/cca.toml.tmp"]),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_no_writer_follows_a_link_planted_at_its_temporary_name(world, run_cli, cca_store, writer):
    call, finals, temps = WRITERS[writer]
    out = world / "out"
    (out / "synthetic").mkdir(parents=True)
    for name in temps:
        os.symlink(world / "victim" / ".bashrc", out / name)
    code, _, err = call(run_cli, cca_store, out)
    assert code == 0, err
    assert (world / "victim" / ".bashrc").read_text() == "echo safe\n"
    for name in finals:
        assert (out / name).is_file() and not (out / name).is_symlink()
    assert not [p for p in out.rglob("*") if ".tmp" in p.name and not p.is_symlink()]  # no temp left behind


@pytest.mark.parametrize("writer", list(WRITERS))
def test_no_writer_replaces_a_link_at_its_final_name(world, run_cli, cca_store, writer):
    call, finals, _ = WRITERS[writer]
    out = world / "out"
    (out / "synthetic").mkdir(parents=True)
    os.symlink(world / "victim" / ".bashrc", out / finals[0])
    if writer == "tuned config":
        from cmr_bench.errors import CmrBenchError

        with pytest.raises(CmrBenchError, match="symbolic link"):
            _tuned(out)
    else:
        code, _, err = call(run_cli, cca_store, out)
        assert_one_line(code, err, "symbolic link")
    assert (world / "victim" / ".bashrc").read_text() == "echo safe\n"
    assert (out / finals[0]).is_symlink()


@pytest.mark.parametrize("linked", ["_out", "_out/synthetic"])
@pytest.mark.parametrize("command", ["table", "report", "plot"])
def test_a_received_store_whose_output_folder_is_a_link_is_refused(world, run_cli, cca_store, linked, command):
    import shutil

    store = world / "store"
    shutil.copytree(cca_store, store)
    if linked == "_out/synthetic":
        (store / "_out").mkdir(exist_ok=True)
    shutil.rmtree(store / linked, ignore_errors=True)
    os.symlink(world / "victim", store / linked)
    before = everything(world / "victim")
    args = {"table": ["table", "--table", "2"], "report": ["report"], "plot": ["plot", "pr"]}[command]
    code, _, err = run_cli(*args, "--dataset", "synthetic", "--results-dir", store)
    assert_one_line(code, err, "symbolic link")
    assert everything(world / "victim") == before


def test_tune_refuses_a_dangling_link_at_the_default_study_database(world, run_cli):
    pytest.importorskip("optuna")
    out = world / "tuned"
    (out / "synthetic").mkdir(parents=True)
    os.symlink(world / "victim" / "planted.db", out / "synthetic" / "studies.db")
    code, _, err = run_cli("tune", "--methods", "cca", "--dataset", "synthetic", "--trials", "1", "--out", out)
    assert_one_line(code, err, "symbolic link")
    assert not (world / "victim" / "planted.db").exists()


def test_report_embeds_only_regular_figures_the_suite_wrote(world, run_cli, cca_store):
    out = world / "out"
    assert run_cli("plot", "pr", "--dataset", "synthetic", "--results-dir", cca_store, "--out", out / "fig_pr.png")[0] == 0
    secret = world / "victim" / "secret.png"
    secret.write_bytes(b"\x89PNG\r\n\x1a\nTOP-SECRET-BYTES")
    os.symlink(secret, out / "fig_linked.png")  # a link to someone's file
    (out / "fig_stray.png").write_bytes(secret.read_bytes())  # a PNG the suite did not write
    code, _, err = run_cli("report", "--dataset", "synthetic", "--results-dir", cca_store, "--out", out)
    assert code == 0, err
    page = (out / "report.html").read_text()
    import base64

    assert page.count("data:image/png;base64,") == 1  # fig_pr.png only
    assert base64.b64encode(secret.read_bytes()).decode()[:16] not in page
    assert "Left out" in page and "fig_linked.png, fig_stray.png" in page  # the other two are named, not shown
    code, _, err = run_cli("report", "--dataset", "synthetic", "--results-dir", cca_store, "--out", out, "--figures", "link")
    linked = (out / "report.html").read_text()
    assert code == 0 and 'src="fig_stray.png"' in linked and "fig_linked.png\"" not in linked  # a link is never linked


def test_a_tuned_config_that_is_a_fifo_is_refused_not_waited_on(tmp_path):
    import threading

    from cmr_bench.errors import CmrBenchError
    from cmr_bench.runner.tuned import read_tuned

    fifo = tmp_path / "cca.toml"
    os.mkfifo(fifo)
    outcome = []

    def read():
        try:
            read_tuned(fifo)
        except CmrBenchError as exc:
            outcome.append(str(exc))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # the old code blocks in open(): unblock it, then fail
        with open(fifo, "w"):
            pass
        pytest.fail("reading a FIFO as a tuned config hung")
    assert outcome and "not a regular file" in outcome[0]


@pytest.fixture
def chdir_method(tmp_path):
    from cmr_bench.plugin import Method, MethodInfo

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    class Wandering(Method):
        name = "test-wandering"
        info = MethodInfo("Wandering", "test", "test", 2026, status="baseline")
        defaults = {}

        def fit(self, train, val=None):
            os.chdir(elsewhere)
            return []

        def encode(self, features, modality):
            return features[:, :3].astype("float32")

    cwd = os.getcwd()
    with registered(Wandering):
        yield elsewhere
    os.chdir(cwd)


def test_a_plugin_changing_directory_in_fit_does_not_move_the_default_store(tmp_path, run_cli, chdir_method, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.chdir(home)
    code, out, err = run_cli("run", "--methods", "test-wandering,cca", "--dataset", "synthetic", "--no-progress")
    assert code == 0, err
    assert len(list((home / "results" / "runs").rglob("run.json"))) == 2
    assert not (chdir_method / "results").exists()


# --- features extract --out/--overwrite: delete only a dataset folder the suite provably made ---

@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    pytest.importorskip("transformers")
    pytest.importorskip("PIL")
    from cmr_bench.features.tiny import build_tiny

    return build_tiny("clip", tmp_path_factory.mktemp("models"))


def _extract(run_cli, raw, model, out, *extra):
    # a real (tiny) model: the old code got as far as deleting --out
    return run_cli("features", "extract", "--images", raw["images"], "--texts", raw["texts"], "--labels", raw["labels"],
                   "--split", raw["split"], "--backbone", "clip", "--model", model, "--out", out,
                   "--device", "cpu", "--batch-size", "4", "--shard-size", "4", *extra)


@pytest.fixture
def raw_inputs(world, monkeypatch):
    pytest.importorskip("transformers")
    pytest.importorskip("PIL")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    from test_features import make_raw

    return make_raw(world / "raw", n=8)


@pytest.mark.parametrize("case", ["user folder", "parent of a subfolder", "dot-dot", "link to a folder", "a file"])
def test_features_extract_overwrite_deletes_nothing_it_did_not_make(world, run_cli, raw_inputs, tiny_clip, monkeypatch, case):
    data = world / "data"
    (data / "mine").mkdir()
    (data / "mine" / "thesis.tex").write_text("years of work\n")
    (world / "victim" / "dataset").mkdir()
    (world / "victim" / "dataset" / "notes.txt").write_text("keep\n")
    (data / "afile").write_text("a file\n")
    if case == "user folder":
        out = data / "mine"
    elif case == "parent of a subfolder":
        out = f"{data}/mine/.."
    elif case == "dot-dot":
        monkeypatch.chdir(data / "mine")
        out = ".."
    elif case == "link to a folder":
        os.symlink(world / "victim" / "dataset", data / "linked")
        out = data / "linked"
    else:
        out = data / "afile"
    before = everything(world)
    code, _, err = _extract(run_cli, raw_inputs, tiny_clip, out, "--overwrite")
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert everything(world) == before  # nothing deleted, nothing half-made (.partial) anywhere


def test_features_extract_overwrite_still_replaces_its_own_dataset(world, run_cli, raw_inputs, tiny_clip):
    out = world / "data" / "feats"
    assert _extract(run_cli, raw_inputs, tiny_clip, out)[0] == 0
    first = (out / "extraction.json").read_text()
    code, _, err = _extract(run_cli, raw_inputs, tiny_clip, out, "--overwrite", "--batch-size", "2")
    assert code == 0, err
    assert (out / "extraction.json").read_text() != first  # replaced (other settings) ...
    assert sorted(p.name for p in (world / "data").iterdir()) == ["feats"]  # ... leaving no work or old folder


def _png_header(width: int, height: int) -> bytes:
    """A valid small PNG whose header claims width x height."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def _first_key(raw) -> str:
    return raw["texts"].read_text().splitlines()[0].split("\t")[0]


def _retarget_first(raw, new_key: str) -> None:
    old = _first_key(raw)
    for name in ("texts", "labels", "split"):
        raw[name].write_text(raw[name].read_text().replace(old + "\t", new_key + "\t", 1))


# case -> (how to spoil the inputs, words the one line must hold)
BAD_INPUTS = {
    "png bomb header": (lambda raw, w: (raw["images"] / _first_key(raw)).write_bytes(_png_header(60000, 60000)), "unreadable image"),
    "zero-byte image": (lambda raw, w: (raw["images"] / _first_key(raw)).write_bytes(b""), "unreadable image"),
    "not an image": (lambda raw, w: (raw["images"] / _first_key(raw)).write_bytes(b"just text\n"), "unreadable image"),
    "absolute caption key": (lambda raw, w: _retarget_first(raw, str(w / "victim" / "secret.png")), "relative"),
    "dot-dot caption key": (lambda raw, w: _retarget_first(raw, "../victim/secret.png"), "relative"),
    "symlinked image": (lambda raw, w: ((raw["images"] / _first_key(raw)).unlink(),
                                        os.symlink(w / "victim" / "secret.png", raw["images"] / _first_key(raw))), "symbolic link"),
    "undecodable captions": (lambda raw, w: raw["texts"].write_bytes(b"\xff\xfe\x00bad" + raw["texts"].read_bytes()), "UTF-8"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_hostile_extraction_inputs_are_one_line_before_any_model(world, run_cli, raw_inputs, tiny_clip, case):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(world / "victim" / "secret.png")
    spoil, expected = BAD_INPUTS[case]
    spoil(raw_inputs, world)
    before = everything(world / "data")
    code, _, err = _extract(run_cli, raw_inputs, tiny_clip, world / "data" / "feats")
    assert_one_line(code, err, expected)
    assert everything(world / "data") == before


def test_truncated_image_is_one_error_naming_the_file(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image

    from cmr_bench.errors import DataError
    from cmr_bench.features.inputs import load_image

    path = tmp_path / "t.png"
    Image.effect_noise((64, 64), 50).convert("RGB").save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="t.png"):
        load_image(path)


# --- the safe-IO module itself: what every writer and reader above relies on ------------------

@pytest.mark.parametrize("kind", ["link", "dangling link", "fifo", "folder"])
def test_safe_io_never_writes_through_or_reads_what_is_not_a_regular_file(world, kind):
    from cmr_bench.errors import CmrBenchError
    from cmr_bench.safe_io import read_bytes, write_text

    target = world / "out" / "file.txt"
    target.parent.mkdir()
    if kind == "link":
        os.symlink(world / "victim" / ".bashrc", target)
    elif kind == "dangling link":
        os.symlink(world / "victim" / "new-file", target)
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        target.mkdir()
    with pytest.raises(CmrBenchError):
        write_text(target, "payload")
    with pytest.raises(CmrBenchError):
        read_bytes(target, "file")  # a FIFO: refused at once, never opened for a blocking read
    assert (world / "victim" / ".bashrc").read_text() == "echo safe\n" and not (world / "victim" / "new-file").exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.txt"]  # no temp left behind


def test_safe_io_refuses_a_file_larger_than_its_kind_allows(tmp_path):
    from cmr_bench.errors import CmrBenchError
    from cmr_bench.safe_io import read_text, write_text

    write_text(tmp_path / "big.toml", "x" * 2000)
    assert read_text(tmp_path / "big.toml", "tuned config", max_bytes=4000) == "x" * 2000
    with pytest.raises(CmrBenchError, match="bytes"):
        read_text(tmp_path / "big.toml", "tuned config", max_bytes=1000)
