"""Pull over HTTP from a local server: checksums, corruption, resume, concurrency, offline mode."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from zoo_helpers import entry_dict, write_index

from metaprune.errors import ChecksumError, ZooError
from metaprune.zoo import download_file, pull, verify_files

WEIGHTS = bytes(range(256)) * 400  # 102,400 bytes: several chunks, so a cut lands mid-file
CONFIG = b'{"model": {"name": "mlp"}}'


def _serve_entry(tmp_path: Path, base: str, state, name: str = "tiny") -> Path:
    state.files = {f"/zoo/{name}/model.safetensors": WEIGHTS, f"/zoo/{name}/architecture.json": CONFIG}
    entry = entry_dict(name, {"model.safetensors": WEIGHTS, "architecture.json": CONFIG}, f"{base}/zoo/{name}/")
    return write_index(tmp_path / "index.json", entry)


def _cached_files(cache: Path) -> list[Path]:
    return sorted(path for path in (cache / "entries").rglob("*") if path.is_file())


def test_pull_downloads_verified_files_into_the_cache(tmp_path, http_server, zoo_cache):
    base, state = http_server
    index = _serve_entry(tmp_path, base, state)
    folder = pull("tiny", index=index)
    assert folder == zoo_cache / "entries" / "tiny"
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert (folder / "architecture.json").read_bytes() == CONFIG
    assert _cached_files(zoo_cache) == [folder / "architecture.json", folder / "model.safetensors"]
    assert verify_files("tiny", index=index) == {"model.safetensors": "ok", "architecture.json": "ok"}
    # A second pull re-verifies the cache and downloads nothing.
    seen = len(state.requests)
    assert pull("tiny", index=index) == folder
    assert len(state.requests) == seen


def test_corrupted_byte_raises_checksum_error_and_leaves_nothing(tmp_path, http_server, zoo_cache):
    base, state = http_server
    index = _serve_entry(tmp_path, base, state)
    state.mode = "corrupt"
    with pytest.raises(ChecksumError, match="sha256"):
        pull("tiny", index=index)
    assert _cached_files(zoo_cache) == []
    assert not (zoo_cache / "entries" / "tiny").exists()


def test_interrupted_download_resumes_with_a_range_request(tmp_path, http_server, zoo_cache):
    base, state = http_server
    index = _serve_entry(tmp_path, base, state)
    state.drops_left = 1
    folder = pull("tiny", index=index)
    assert hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest() == hashlib.sha256(WEIGHTS).hexdigest()
    weights_requests = [rng for path, rng in state.requests if path.endswith("model.safetensors")]
    assert weights_requests[0] is None
    # The first answer was cut after half the file; the retry asks for exactly the rest.
    assert weights_requests[1:] == [f"bytes={len(WEIGHTS) // 2}-"]
    assert not list(folder.glob("*.part"))


def test_partial_file_from_an_earlier_run_is_resumed(tmp_path, http_server, zoo_cache):
    base, state = http_server
    state.files = {"/w.bin": WEIGHTS}
    dest = zoo_cache / "w.bin"
    dest.parent.mkdir(parents=True)
    dest.with_name("w.bin.part").write_bytes(WEIGHTS[:1000])
    download_file(f"{base}/w.bin", dest, sha256=hashlib.sha256(WEIGHTS).hexdigest(), size=len(WEIGHTS))
    assert dest.read_bytes() == WEIGHTS
    assert state.requests == [("/w.bin", "bytes=1000-")]


def test_server_ignoring_range_restarts_the_file(tmp_path, http_server, zoo_cache):
    base, state = http_server
    state.files, state.mode = {"/w.bin": WEIGHTS}, "ignore_range"
    dest = zoo_cache / "w.bin"
    dest.parent.mkdir(parents=True)
    dest.with_name("w.bin.part").write_bytes(b"stale bytes that must not be kept")
    download_file(f"{base}/w.bin", dest, sha256=hashlib.sha256(WEIGHTS).hexdigest(), size=len(WEIGHTS))
    assert dest.read_bytes() == WEIGHTS


def test_bad_partial_file_is_discarded_and_downloaded_again(tmp_path, http_server, zoo_cache):
    base, state = http_server
    state.files = {"/w.bin": WEIGHTS}
    dest = zoo_cache / "w.bin"
    dest.parent.mkdir(parents=True)
    dest.with_name("w.bin.part").write_bytes(b"\x00" * 1000)  # wrong bytes: resuming gives a bad hash
    download_file(f"{base}/w.bin", dest, sha256=hashlib.sha256(WEIGHTS).hexdigest(), size=len(WEIGHTS))
    assert dest.read_bytes() == WEIGHTS
    assert state.requests == [("/w.bin", "bytes=1000-"), ("/w.bin", None)]


def test_download_that_keeps_breaking_keeps_the_partial_for_later(tmp_path, http_server, zoo_cache):
    base, state = http_server
    state.files, state.drops_left = {"/w.bin": WEIGHTS}, 100
    dest = zoo_cache / "w.bin"
    with pytest.raises(ZooError, match="stopped short 2 times"):
        download_file(f"{base}/w.bin", dest, sha256=hashlib.sha256(WEIGHTS).hexdigest(), size=len(WEIGHTS), retries=1)
    assert not dest.exists()
    assert 0 < dest.with_name("w.bin.part").stat().st_size < len(WEIGHTS)


def test_missing_file_on_server_is_a_clear_error(tmp_path, http_server):
    base, state = http_server
    index = _serve_entry(tmp_path, base, state)
    del state.files["/zoo/tiny/model.safetensors"]
    with pytest.raises(ZooError, match="HTTP 404"):
        pull("tiny", index=index)


def test_concurrent_pulls_of_one_entry_end_with_one_good_file(tmp_path, http_server, zoo_cache):
    base, state = http_server
    index = _serve_entry(tmp_path, base, state)
    state.chunk_delay_s = 0.002  # ~50 ms per transfer, so the pulls overlap
    results, errors = [], []

    def worker() -> None:
        try:
            results.append(pull("tiny", index=index))
        except Exception as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(results)) == 1
    assert (results[0] / "model.safetensors").read_bytes() == WEIGHTS
    # The lock serialised the pulls: each file crossed the network exactly once.
    assert sorted(path for path, _ in state.requests) == ["/zoo/tiny/architecture.json", "/zoo/tiny/model.safetensors"]


def test_concurrent_pulls_from_separate_processes(tmp_path, http_server, zoo_cache):
    base, state = http_server
    index = _serve_entry(tmp_path, base, state)
    state.chunk_delay_s = 0.002
    code = f"from metaprune.zoo import pull; print(pull('tiny', index={str(index)!r}))"
    env = {**os.environ, "METAPRUNE_CACHE": str(zoo_cache)}
    processes = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outputs = [process.communicate(timeout=60)[0].strip() for process in processes]
    assert [process.returncode for process in processes] == [0, 0]
    assert outputs == [str(zoo_cache / "entries" / "tiny")] * 2
    assert (zoo_cache / "entries" / "tiny" / "model.safetensors").read_bytes() == WEIGHTS
    assert sorted(path for path, _ in state.requests) == ["/zoo/tiny/architecture.json", "/zoo/tiny/model.safetensors"]


def test_offline_with_empty_cache_names_what_is_missing(tmp_path, http_server):
    base, state = http_server
    index = _serve_entry(tmp_path, base, state)
    with pytest.raises(ZooError, match=r"offline mode.*missing \['model.safetensors', 'architecture.json'\]"):
        pull("tiny", index=index, offline=True)
    assert state.requests == []


def test_offline_with_full_cache_works_without_the_server(tmp_path, http_server, monkeypatch):
    base, state = http_server
    index = _serve_entry(tmp_path, base, state)
    folder = pull("tiny", index=index)
    state.files.clear()  # the server now knows nothing: any request would 404
    seen = len(state.requests)
    monkeypatch.setenv("METAPRUNE_OFFLINE", "1")
    assert pull("tiny", index=index) == folder
    assert len(state.requests) == seen


def test_offline_detects_a_tampered_cache(tmp_path, http_server):
    base, state = http_server
    index = _serve_entry(tmp_path, base, state)
    folder = pull("tiny", index=index)
    (folder / "model.safetensors").write_bytes(WEIGHTS[:-1] + b"\x00")
    assert verify_files("tiny", index=index)["model.safetensors"] == "mismatch"
    with pytest.raises(ChecksumError, match="does not match"):
        pull("tiny", index=index, offline=True)
    # Online, the bad copy is replaced by a verified one.
    assert (pull("tiny", index=index) / "model.safetensors").read_bytes() == WEIGHTS


def test_remote_index_is_cached_for_offline_use(tmp_path, http_server):
    base, state = http_server
    index_path = _serve_entry(tmp_path, base, state)
    state.files["/index.json"] = index_path.read_bytes()
    with pytest.raises(ZooError, match="never been fetched"):
        pull("tiny", index=f"{base}/index.json", offline=True)
    folder = pull("tiny", index=f"{base}/index.json")
    state.files.clear()
    assert pull("tiny", index=f"{base}/index.json", offline=True) == folder


def test_large_downloads_show_a_progress_bar_on_stderr(tmp_path, http_server, capfd):
    base, state = http_server
    state.files = {"/w.bin": WEIGHTS}
    dest = download_file(f"{base}/w.bin", tmp_path / "w.bin", sha256=hashlib.sha256(WEIGHTS).hexdigest(),
                         size=len(WEIGHTS), progress=True)
    assert dest.read_bytes() == WEIGHTS
    err = capfd.readouterr().err
    assert "w.bin" in err and "102.4/102.4 kB" in err, err


def _hf_cache(root: Path, repo: str, files: dict[str, bytes], revision: str = "main") -> Path:
    """A Hugging Face Hub cache folder holding ``files`` of model repository ``repo`` at ``revision``, laid out as
    ``huggingface_hub`` writes it (blobs, a snapshot per commit, a ref naming the commit)."""
    commit = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()
    folder = root / f"models--{repo.replace('/', '--')}"
    for name, data in files.items():
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = folder / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / revision).write_text(commit)
    return root


def test_hf_urls_are_read_from_the_hub_cache_offline(tmp_path, monkeypatch, zoo_cache):
    """hf:// goes through huggingface_hub: HF_HUB_OFFLINE=1 and a pre-populated Hub cache, no network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(_hf_cache(tmp_path / "hf", "me/zoo", {"tiny/model.safetensors": WEIGHTS})))
    index = write_index(tmp_path / "index.json", entry_dict("tiny", {"model.safetensors": WEIGHTS}, "hf://me/zoo/tiny/"))
    folder = pull("tiny", index=index)
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS and not (folder / "model.safetensors").is_symlink()
    missing = write_index(tmp_path / "other.json", entry_dict("other", {"m.bin": b"x"}, "hf://me/zoo/other/"))
    with pytest.raises(ZooError, match="offline mode: hf://me/zoo/other/m.bin is not in the Hugging Face cache"):
        pull("other", index=missing)
    wrong = write_index(tmp_path / "wrong.json", entry_dict("wrong", {"model.safetensors": WEIGHTS[:-1] + b"!"},
                                                             "hf://me/zoo/tiny/"))
    with pytest.raises(ChecksumError, match="pin a revision"):
        pull("wrong", index=wrong)


def test_an_index_on_the_hub_is_read_through_the_hub_cache(tmp_path, monkeypatch, zoo_cache):
    entry = entry_dict("tiny", {"model.safetensors": WEIGHTS}, "tiny/")  # relative to the index, in its repository
    files = {"zoo/index.json": write_index(tmp_path / "i.json", entry).read_bytes(), "zoo/tiny/model.safetensors": WEIGHTS}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(_hf_cache(tmp_path / "hf", "me/zoo", files, revision="v1")))
    folder = pull("tiny", index="hf://me/zoo@v1/zoo/index.json")
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    with pytest.raises(ZooError, match="not in the Hugging Face cache"):  # main was never fetched
        pull("tiny", index="hf://me/zoo/zoo/index.json")


def test_hf_urls_pass_revision_type_endpoint_and_cache_to_the_hub_client(tmp_path, monkeypatch):
    import metaprune.zoo.hub as hub

    calls = []

    def fake_download(repo_id, filename, **options):
        calls.append((repo_id, filename, options))
        path = tmp_path / "fetched.bin"
        path.write_bytes(WEIGHTS)
        return str(path)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.org")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    dest = download_file("hf://datasets/me/zoo@v2/tiny/w.bin", tmp_path / "out" / "w.bin",
                         sha256=hashlib.sha256(WEIGHTS).hexdigest(), size=len(WEIGHTS))
    assert dest.read_bytes() == WEIGHTS
    [(repo_id, filename, options)] = calls
    assert (repo_id, filename) == ("me/zoo", "tiny/w.bin")
    assert options["repo_type"] == "dataset" and options["revision"] == "v2" and not options["local_files_only"]
    assert options["endpoint"] == "https://hub.example.org" and options["cache_dir"] == str(tmp_path / "hf")
    assert hub.fetch("hf://me/zoo/a.bin", offline=True) and calls[-1][2]["local_files_only"]
