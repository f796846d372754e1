"""Names and URLs from an index are untrusted: nothing may escape the cache."""

from __future__ import annotations

import pytest
from zoo_helpers import entry_dict, write_index

from metaprune.errors import ZooError
from metaprune.zoo import load_index, pull
from metaprune.zoo.names import check_entry_name, check_file_name, safe_join
from metaprune.zoo.urls import join_url, location_url

BAD_ENTRY_NAMES = ["..", "../evil", "a/b", "/etc", "a\\b", "", ".hidden", "a..b", "x" * 201, "name with space"]
BAD_FILE_NAMES = ["../x", "a/../b", "/etc/passwd", "a\\b", "", "a//b", "./a", "a/", "C:/x"]


@pytest.mark.parametrize("name", BAD_ENTRY_NAMES)
def test_unsafe_entry_names_are_rejected(name):
    with pytest.raises(ZooError, match="invalid zoo entry name"):
        check_entry_name(name)


@pytest.mark.parametrize("name", BAD_FILE_NAMES)
def test_unsafe_file_names_are_rejected(name):
    with pytest.raises(ZooError, match="invalid zoo file name"):
        check_file_name(name)


@pytest.mark.parametrize("name", ["resnet20-digits-channel-f50", "vit_tiny.v2", "sd+router"])
def test_ordinary_entry_names_pass(name):
    assert check_entry_name(name) == name


def test_file_names_may_have_sub_folders():
    assert check_file_name("unet/diffusion_pytorch_model.safetensors") == "unet/diffusion_pytorch_model.safetensors"


def test_safe_join_refuses_a_symlink_out_of_the_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    assert safe_join(root, "a", "b.bin") == root / "a" / "b.bin"
    with pytest.raises(ZooError, match="escapes"):
        safe_join(root, "link", "x")


def test_index_with_a_traversal_file_name_is_rejected(tmp_path):
    entry = entry_dict("tiny", {"model.bin": b"x"}, "http://127.0.0.1:9/")
    entry["files"][0]["name"] = "../../outside.bin"
    with pytest.raises(ZooError, match="invalid zoo file name '../../outside.bin'"):
        load_index(write_index(tmp_path / "index.json", entry))


def test_index_with_a_traversal_entry_name_is_rejected(tmp_path):
    entry = entry_dict("../escape", {"model.bin": b"x"}, "http://127.0.0.1:9/")
    with pytest.raises(ZooError, match="invalid zoo entry name"):
        load_index(write_index(tmp_path / "index.json", entry))


def test_pull_rejects_a_traversal_name_before_touching_anything(tmp_path, zoo_cache):
    index = write_index(tmp_path / "index.json", entry_dict("tiny", {"m.bin": b"x"}, "http://127.0.0.1:9/"))
    with pytest.raises(ZooError, match="invalid zoo entry name"):
        pull("../tiny", index=index)
    assert not (zoo_cache / "entries").exists()


def test_hf_urls_stay_hub_urls_and_join_inside_their_repository():
    assert location_url("hf://owner/repo/zoo/index.json") == "hf://owner/repo/zoo/index.json"
    assert join_url("hf://owner/repo/tiny/", "model.safetensors") == "hf://owner/repo/tiny/model.safetensors"
    assert join_url("hf://owner/repo@v1/zoo/index.json", "entries/a/m.bin") == "hf://owner/repo@v1/zoo/entries/a/m.bin"
    assert join_url("hf://datasets/owner/repo/index.json", "a/m.bin") == "hf://datasets/owner/repo/a/m.bin"
    assert join_url("hf://owner/repo/index.json", "https://example.org/m.bin") == "https://example.org/m.bin"
    with pytest.raises(ZooError, match="not a path inside hf://owner/repo"):
        join_url("hf://owner/repo/zoo/index.json", "../../secret")
    with pytest.raises(ZooError, match="invalid hf:// URL"):
        location_url("hf://")


def test_relative_urls_resolve_against_the_index_location(tmp_path):
    index_url = location_url(tmp_path / "zoo" / "index.json")
    assert join_url(index_url, "tiny/model.bin") == (tmp_path / "zoo" / "tiny" / "model.bin").as_uri()
    assert join_url("https://example.org/zoo/index.json", "tiny/m.bin") == "https://example.org/zoo/tiny/m.bin"
    assert join_url("https://example.org/zoo/index.json", "file:///abs/m.bin") == "file:///abs/m.bin"


def test_unknown_url_scheme_is_rejected():
    with pytest.raises(ZooError, match="unsupported URL scheme 'ftp'"):
        location_url("ftp://example.org/index.json")
