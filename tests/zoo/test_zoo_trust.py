"""The zoo's trust boundary: a shared cache, a remote index and a checksum-valid entry are all untrusted.

Planted symlinks and non-files in the cache are refused (never followed, truncated or appended
to); an index fetched over HTTP may not name local files and is read with a bounded reader; an
entry's architecture is size-checked on the meta device before anything is built; every zoo file
is parsed through a typed schema with one error naming the file and the field.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner
from zoo_helpers import entry_dict, write_fake_run_dir, write_index

from metaprune.cli.zoo import app
from metaprune.errors import ChecksumError, ZooError
from metaprune.zoo import download_file, load_entry, load_index, pull
from metaprune.zoo.registry import parse_index

WEIGHTS = bytes(range(256)) * 40
CONFIG = b'{"model": {"name": "mlp"}}'
PRECIOUS = b"the user's own file, which no pull may touch\n"


def _serve(tmp_path: Path, base: str, state, name: str = "tiny") -> Path:
    state.files = {f"/zoo/{name}/model.safetensors": WEIGHTS, f"/zoo/{name}/architecture.json": CONFIG}
    entry = entry_dict(name, {"model.safetensors": WEIGHTS, "architecture.json": CONFIG}, f"{base}/zoo/{name}/")
    return write_index(tmp_path / "index.json", entry)


def _precious(tmp_path: Path) -> Path:
    target = tmp_path / "precious.txt"
    target.write_bytes(PRECIOUS)
    return target


# --- planted symlinks and non-files in the cache ------------------------------------------------------------


@pytest.mark.parametrize("planted", ["model.safetensors.part", "model.safetensors"])
def test_a_planted_symlink_in_the_cache_is_refused_and_its_target_untouched(tmp_path, http_server, zoo_cache,
                                                                             planted):
    base, state = http_server
    index = _serve(tmp_path, base, state)
    target = _precious(tmp_path)
    folder = zoo_cache / "entries" / "tiny"
    folder.mkdir(parents=True)
    (folder / planted).symlink_to(target)
    with pytest.raises(ZooError, match=r"is a symlink where the zoo cache expects a plain file|escapes the zoo dir"):
        pull("tiny", index=index)
    assert target.read_bytes() == PRECIOUS
    assert (folder / planted).is_symlink()  # refused, not replaced by a "verified" file
    assert not (folder / "model.safetensors").exists() or (folder / "model.safetensors").is_symlink()


def test_a_planted_part_symlink_to_a_file_inside_the_cache_is_refused_too(tmp_path, http_server, zoo_cache):
    base, state = http_server
    index = _serve(tmp_path, base, state)
    folder = zoo_cache / "entries" / "tiny"
    folder.mkdir(parents=True)
    inside = folder / "architecture.json"
    inside.write_bytes(CONFIG)
    (folder / "model.safetensors.part").symlink_to(inside)  # stays inside the root: containment alone misses it
    with pytest.raises(ZooError, match="is a symlink where the zoo cache expects a plain file"):
        pull("tiny", index=index)
    assert inside.read_bytes() == CONFIG


def test_a_part_symlink_swapped_in_before_the_open_is_not_followed(tmp_path, http_server, zoo_cache, monkeypatch):
    """Even if the lstat check is passed first (a race), O_NOFOLLOW refuses the symlink at open time."""
    base, state = http_server
    state.files = {"/w.bin": WEIGHTS}
    target = _precious(tmp_path)
    dest = zoo_cache / "w.bin"
    dest.parent.mkdir(parents=True)
    monkeypatch.setattr("metaprune.zoo.download.check_regular_or_absent", lambda path: False)
    dest.with_name("w.bin.part").symlink_to(target)
    with pytest.raises(ZooError, match="is a symlink where the zoo cache expects a plain file"):
        download_file(f"{base}/w.bin", dest, sha256=hashlib.sha256(WEIGHTS).hexdigest(), size=len(WEIGHTS))
    assert target.read_bytes() == PRECIOUS


def test_a_planted_fifo_or_folder_is_refused_without_blocking(tmp_path, http_server, zoo_cache):
    base, state = http_server
    index = _serve(tmp_path, base, state)
    folder = zoo_cache / "entries" / "tiny"
    folder.mkdir(parents=True)
    os.mkfifo(folder / "model.safetensors.part")
    (folder / "architecture.json").mkdir()
    started = time.monotonic()
    with pytest.raises(ZooError, match="not a regular file"):
        pull("tiny", index=index)
    assert time.monotonic() - started < 10


def test_a_planted_lock_symlink_is_refused_and_its_target_untouched(tmp_path, http_server, zoo_cache):
    base, state = http_server
    index = _serve(tmp_path, base, state)
    target = _precious(tmp_path)
    (zoo_cache / "locks").mkdir(parents=True)
    (zoo_cache / "locks" / "tiny.lock").symlink_to(target)
    with pytest.raises(ZooError, match="is a symlink where the zoo cache expects a plain file"):
        pull("tiny", index=index)
    assert target.read_bytes() == PRECIOUS


def test_a_symlinked_cached_file_fails_verify_files_and_offline_pull(tmp_path, http_server, zoo_cache):
    from metaprune.zoo import verify_files

    base, state = http_server
    index = _serve(tmp_path, base, state)
    folder = pull("tiny", index=index)
    copy = folder / "copy.bin"
    copy.write_bytes(WEIGHTS)  # the right bytes, inside the cache, but behind a link: still refused
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").symlink_to(copy)
    with pytest.raises(ZooError, match="is a symlink where the zoo cache expects a plain file"):
        verify_files("tiny", index=index)
    with pytest.raises(ZooError, match="is a symlink where the zoo cache expects a plain file"):
        pull("tiny", index=index, offline=True)


# --- what a remote index may name -------------------------------------------------------------------------


def _remote_index(state, base: str, *entries: dict) -> str:
    state.files["/index.json"] = json.dumps({"schema_version": 1, "entries": list(entries)}).encode()
    return f"{base}/index.json"


def test_a_remote_index_cannot_name_a_local_file(tmp_path, http_server, zoo_cache):
    base, state = http_server
    secret = _precious(tmp_path)
    entry = entry_dict("leak", {"secret.txt": PRECIOUS})
    entry["files"][0]["url"] = secret.as_uri()
    index = _remote_index(state, base, entry)
    with pytest.raises(ZooError, match="never local files"):
        pull("leak", index=index)
    assert not (zoo_cache / "entries" / "leak" / "secret.txt").exists()
    entry = entry_dict("leak", {"secret.txt": PRECIOUS}, base_url=secret.parent.as_uri() + "/")
    entry["files"][0]["name"] = secret.name
    with pytest.raises(ZooError, match="never local files"):
        pull("leak", index=_remote_index(state, base, entry))


@pytest.mark.parametrize(("url", "allowed"), [
    ("zoo/a/m.bin", True),                          # relative: the index's own origin
    ("/other/path/m.bin", True),                    # same origin, another path
    ("https://huggingface.co/me/zoo/m.bin", True),  # explicit https
    ("hf://me/zoo/m.bin", True),                    # explicit hf://
    ("http://example.org/m.bin", False),            # plain http elsewhere
    ("//example.org/m.bin", False),                 # scheme-relative: plain http elsewhere
    ("file:///etc/hostname", False),
    ("ftp://example.org/m.bin", False),
])
def test_origin_rules_of_a_remote_index(url, allowed):
    entry = entry_dict("a", {"m.bin": b"1"})
    entry["files"][0]["url"] = url
    text = json.dumps({"schema_version": 1, "entries": [entry]})
    if allowed:
        parse_index(text, "http://127.0.0.1:8000/index.json")
    else:
        with pytest.raises(ZooError, match="may only name files under its own origin"):
            parse_index(text, "http://127.0.0.1:8000/index.json")
    parse_index(text, "file:///home/me/zoo/index.json")  # a local index is the user's choice: anything goes


def test_a_remote_index_over_the_size_cap_is_refused_without_reading_it_all(http_server, monkeypatch):
    base, state = http_server
    monkeypatch.setattr("metaprune.zoo.registry.MAX_INDEX_BYTES", 1000)
    state.files["/index.json"] = b'{"schema_version": 1, "entries": [], "pad": "' + b"x" * 5000 + b'"}'
    with pytest.raises(ZooError, match="over the limit of 1,000"):
        load_index(f"{base}/index.json")


def test_the_bounded_reader_stops_at_the_cap_without_a_content_length(monkeypatch):
    from metaprune.zoo.registry import _bounded_read

    class Endless:
        headers: dict = {}
        served = 0

        def read(self, n: int) -> bytes:
            self.served += n
            return b"x" * n

    stream = Endless()
    with pytest.raises(ZooError, match="over the limit"):
        _bounded_read(stream, "http://x/index.json", 100_000)
    assert stream.served <= 100_001


@pytest.mark.parametrize(("raw", "message"), [
    (b'{"schema_version": 1, "entries": ["\xff\xfe"]}', "is not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "is not valid JSON"),
    (b'{"schema_version": "1", "entries": []}', r"field schema_version: Input should be a valid integer"),
    (b'{"schema_version": 1, "entries": {}}', r"field entries: Input should be a valid list"),
    (b'{"schema_version": 1, "entries": [[]]}', r"entries\[0\]: field \(top level\): Input should be a valid"),
    (b"[]", "Input should be a valid"),
])
def test_malformed_indexes_are_one_error_naming_the_field(tmp_path, raw, message):
    path = tmp_path / "index.json"
    path.write_bytes(raw)
    with pytest.raises(ZooError, match=message) as caught:
        load_index(path)
    assert "\n" not in str(caught.value) and str(path.name) in str(caught.value)


def test_malformed_remote_index_is_not_cached_for_offline_use(http_server):
    base, state = http_server
    state.files["/index.json"] = b'{"schema_version": 1, "entries": [1]}'
    with pytest.raises(ZooError, match=r"entries\[0\]"):
        load_index(f"{base}/index.json")
    with pytest.raises(ZooError, match="never been fetched"):
        load_index(f"{base}/index.json", offline=True)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.text(max_size=8), children, max_size=3), max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutation=st.tuples(st.sampled_from(["name", "task", "pattern", "flops", "params", "metrics", "files",
                                           "recipe", "license", "base_url", "schema_version", "entries"]),
                          JSON_VALUES))
def test_any_mutation_of_an_index_is_valid_or_one_zoo_error(mutation):
    key, value = mutation
    entry = entry_dict("a", {"m.bin": b"1"}, "a/")
    index = {"schema_version": 1, "entries": [entry]}
    (index if key in ("schema_version", "entries") else entry)[key] = value
    try:
        parse_index(json.dumps(index), "https://example.org/index.json")
    except ZooError as error:
        assert "\n" not in str(error)


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(max_size=200))
def test_any_bytes_as_an_index_are_valid_or_one_zoo_error(raw):
    try:
        parse_index(raw, "https://example.org/index.json")
    except ZooError as error:
        assert "\n" not in str(error)


# --- a checksum-valid entry that asks for too much ------------------------------------------------------------


def _local_entry(tmp_path: Path, architecture: dict | None = None, report: dict | None = None) -> Path:
    """A published-looking entry whose files (checksums included) say what the test wants; returns its index."""
    run = write_fake_run_dir(tmp_path / "entry" / "e")
    if architecture is not None:
        (run / "architecture.json").write_text(json.dumps(architecture))
    if report is not None:
        (run / "report.json").write_text(json.dumps(report))
    files = {path.name: path.read_bytes() for path in run.iterdir()}
    return write_index(tmp_path / "entry" / "index.json", entry_dict("e", files, "e/"))


def _architecture(tmp_path: Path, **changes) -> dict:
    architecture = json.loads(write_fake_run_dir(tmp_path / "model").joinpath("architecture.json").read_text())
    for key, value in changes.items():
        architecture[key] = value
    return architecture


def test_an_entry_asking_for_a_huge_model_is_refused_before_allocation(tmp_path, zoo_cache):
    architecture = _architecture(tmp_path, model={"name": "resnet20", "kwargs": {"num_classes": 10, "in_channels": 1,
                                                                                "image_size": 16, "width": 200.0}})
    index = _local_entry(tmp_path, architecture)
    started = time.monotonic()
    with pytest.raises(ZooError, match=r"architecture.json: field model.kwargs: .* parameters, over the zoo's limit"):
        load_entry("e", index=index)
    assert time.monotonic() - started < 30


def test_an_entry_asking_for_millions_of_layers_is_refused_quickly(tmp_path, zoo_cache):
    architecture = _architecture(tmp_path, model={"name": "vit_tiny", "kwargs": {"num_classes": 10, "in_channels": 1,
                                                                                "image_size": 16, "depth": 10_000_000}})
    index = _local_entry(tmp_path, architecture)
    started = time.monotonic()
    with pytest.raises(ZooError, match=r"field model.kwargs: the architecture has more than 50,000 modules"):
        load_entry("e", index=index)
    assert time.monotonic() - started < 60


def test_an_entry_asking_for_a_huge_input_is_refused(tmp_path, zoo_cache):
    index = _local_entry(tmp_path, _architecture(tmp_path, inputs={"shape": [1, 1, 100_000, 100_000],
                                                                   "dtype": "float32"}))
    with pytest.raises(ZooError, match=r"field inputs: the example input has 10,000,000,000 elements"):
        load_entry("e", index=index)


def test_an_entry_with_huge_activations_is_refused(tmp_path, zoo_cache, monkeypatch):
    monkeypatch.setattr("metaprune.zoo.loaders.MAX_ACTIVATIONS", 10)
    index = _local_entry(tmp_path)
    with pytest.raises(ZooError, match=r"activation elements, over the zoo's limit of 10"):
        load_entry("e", index=index)


@pytest.mark.parametrize(("changes", "message"), [
    ({"format": "1"}, r"field format: Input should be 1"),
    ({"model": {"name": "mlp", "kwargs": "wide"}}, r"field model.kwargs: Input should be a valid dictionary"),
    ({"model": {"name": 3}}, r"field model.name: Input should be a valid string"),
    ({"input_shape": [1, -1, 8, 8], "inputs": None}, r"field input_shape\[1\]: Input should be greater than 0"),
    ({"history": {"kind": "channel"}}, r"field history: Input should be a valid list"),
    ({"model": {"name": "mlp", "kwargs": {"image_size": 8, "hidden_sizes": "many"}}}, r"field model"),
])
def test_an_entry_with_a_malformed_architecture_is_one_error_naming_the_field(tmp_path, zoo_cache, changes, message):
    index = _local_entry(tmp_path, _architecture(tmp_path, **changes))
    with pytest.raises(ZooError, match=message) as caught:
        load_entry("e", index=index)
    assert "architecture.json" in str(caught.value) and "\n" not in str(caught.value)


def test_an_architecture_with_bad_utf8_or_deep_nesting_is_one_error(tmp_path, zoo_cache):
    for raw in (b'{"format": 1, "model": "\xff"}', b'{"format": 1, "model": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"):
        run = write_fake_run_dir(tmp_path / "entry" / "e")
        (run / "architecture.json").write_bytes(raw)
        files = {path.name: path.read_bytes() for path in run.iterdir()}
        index = write_index(tmp_path / "entry" / "index.json", entry_dict("e", files, "e/"))
        with pytest.raises(ZooError, match="architecture.json is not valid JSON"):
            load_entry("e", index=index)


def test_an_entry_with_a_malformed_report_is_one_error_naming_the_field(tmp_path, zoo_cache):
    from zoo_helpers import fake_report

    from metaprune.zoo import verify

    report = fake_report()
    report["pruned"]["test_accuracy"] = "high"
    index = _local_entry(tmp_path, report=report)
    with pytest.raises(ZooError, match=r"report.json: field pruned.test_accuracy: Input should be a valid number"):
        verify("e", index=index)


# --- publish: only runs that work, never losing the old entry ------------------------------------------------


def test_publish_refuses_random_bytes_as_weights(tmp_path):
    run = write_fake_run_dir(tmp_path / "run")
    (run / "model.safetensors").write_bytes(os.urandom(4096))
    with pytest.raises(ZooError, match="cannot publish .* does not load"):
        from metaprune.zoo import publish

        publish(run, tmp_path / "zoo", "demo")
    assert not (tmp_path / "zoo").exists()


def test_publish_refuses_weights_of_another_architecture(tmp_path):
    import torch

    from metaprune.models import create_model
    from metaprune.prune.saving import save_run
    from metaprune.zoo import publish

    run = write_fake_run_dir(tmp_path / "run")
    other = write_fake_run_dir(tmp_path / "other")
    save_run(other, create_model("mlp", image_size=8, hidden_sizes=[16]), example_input=torch.zeros(1, 1, 8, 8))
    (run / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    with pytest.raises(ZooError, match="do not fit the architecture"):
        publish(run, tmp_path / "zoo", "demo")


def test_publish_refuses_weights_with_nan(tmp_path):
    from safetensors.torch import load_file, save_file

    from metaprune.zoo import publish

    run = write_fake_run_dir(tmp_path / "run")
    tensors = load_file(str(run / "model.safetensors"))
    first = next(iter(tensors))
    tensors[first] = tensors[first].clone().fill_(float("nan"))
    save_file(tensors, str(run / "model.safetensors"))
    with pytest.raises(ZooError, match="NaN or infinite outputs"):
        publish(run, tmp_path / "zoo", "demo")


def test_publish_refuses_weights_that_do_not_reproduce_the_recorded_accuracy(tmp_path):
    import torch

    from metaprune.models import create_model
    from metaprune.prune.saving import save_run
    from metaprune.zoo import publish

    run = write_fake_run_dir(tmp_path / "run")
    torch.manual_seed(1)
    save_run(run, create_model("mlp", image_size=8, hidden_sizes=[32]), example_input=torch.zeros(1, 1, 8, 8))
    with pytest.raises(ZooError, match=r"score .* on a test batch of 256 but report.json records 93.8%"):
        publish(run, tmp_path / "zoo", "demo")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("failing", ["write_index", "copy_verified"])
def test_a_failed_republish_leaves_the_old_entry_and_the_index_intact(tmp_path, monkeypatch, failing):
    from metaprune.zoo import publish

    zoo = tmp_path / "zoo"
    publish(write_fake_run_dir(tmp_path / "a"), zoo, "demo")
    before = _snapshot(zoo)
    calls = []

    def disk_full(*args, **kwargs):
        calls.append(args)
        if failing == "write_index" or len(calls) > 1:  # copy_verified: fail on the second file
            raise OSError(28, "No space left on device")
        return original(*args, **kwargs)

    module = importlib.import_module("metaprune.zoo.publish")  # the package re-exports a function of that name
    original = getattr(module, failing)
    monkeypatch.setattr(module, failing, disk_full)
    with pytest.raises(OSError, match="No space left"):
        publish(write_fake_run_dir(tmp_path / "b", seed=7), zoo, "demo")
    assert _snapshot(zoo) == before
    assert sorted(path.name for path in zoo.iterdir()) == ["demo", "index.json"]  # no staging folder left behind
    monkeypatch.undo()
    assert load_entry("demo", index=zoo / "index.json") is not None


def test_a_stale_staging_folder_from_a_killed_publish_is_cleaned(tmp_path):
    from metaprune.zoo import publish

    zoo = tmp_path / "zoo"
    (zoo / ".demo.123.abc.tmp").mkdir(parents=True)
    (zoo / ".demo.123.abc.tmp" / "model.safetensors").write_bytes(b"half")
    publish(write_fake_run_dir(tmp_path / "a"), zoo, "demo")
    assert sorted(path.name for path in zoo.iterdir()) == ["demo", "index.json"]


def test_publish_cli_errors_are_one_line(tmp_path):
    run = write_fake_run_dir(tmp_path / "run")
    (tmp_path / "file").write_text("not a folder")
    (run / "model.safetensors").write_bytes(b"\x00" * 100)
    for arguments in (["publish", str(write_fake_run_dir(tmp_path / "ok")), "--to", str(tmp_path / "file")],
                      ["publish", str(run), "--to", str(tmp_path / "zoo")],
                      ["card", str(write_fake_run_dir(tmp_path / "c")), "--out", str(tmp_path / "file")]):
        result = CliRunner().invoke(app, arguments)
        assert result.exit_code == 1, (arguments, result.output)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
        assert "Traceback" not in result.output
    assert (tmp_path / "file").read_text() == "not a folder"


def test_checksum_errors_are_still_zoo_errors():
    assert issubclass(ChecksumError, ZooError)
