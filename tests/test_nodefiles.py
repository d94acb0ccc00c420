"""A finished node's files, checked before a rerun reuses it (`nodefiles.damage`): fast, on hand-made folders."""

import json

import pytest

from s2d_bench.nodefiles import checksums, damage

INFO = {"labeled_draws": 8, "labeled_ids": ["p1"], "seconds": 1.5}


@pytest.fixture
def node(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"\x00weights")
    (model / "tokenizer.json").write_text("{}")
    (tmp_path / "stage.json").write_text(json.dumps({**INFO, "files": checksums(model)}))
    return tmp_path


def test_an_intact_node_has_no_damage(node):
    assert damage(node) is None


@pytest.mark.parametrize("stage_json, problem", [
    (None, "stage.json is missing"),
    ("{not json", "stage.json is unreadable"),
    ("[1, 2]", "stage.json is incomplete"),
    (json.dumps({"labeled_draws": 8, "seconds": 1.0}), "stage.json is incomplete"),
    (json.dumps({"labeled_ids": [], "seconds": 1.0}), "stage.json is incomplete"),
    (json.dumps({"labeled_draws": 8, "labeled_ids": []}), "stage.json is incomplete"),
])
def test_a_missing_unreadable_or_incomplete_stage_json_is_damage(node, stage_json, problem):
    if stage_json is None:
        (node / "stage.json").unlink()
    else:
        (node / "stage.json").write_text(stage_json)
    assert damage(node) == problem


def test_a_stage_json_from_before_checksums_is_trusted(node):
    (node / "stage.json").write_text(json.dumps(INFO))
    (node / "model" / "model.safetensors").write_bytes(b"changed")
    assert damage(node) is None


def test_every_changed_missing_or_extra_model_file_is_named_in_order(node):
    (node / "model" / "tokenizer.json").write_text('{"changed": 1}')
    (node / "model" / "config.json").unlink()
    (node / "model" / "added.bin").write_bytes(b"")
    assert damage(node) == "model files fail their checksums (added.bin, config.json, tokenizer.json)"


def test_a_zeroed_file_of_the_same_size_fails_its_checksum(node):
    weights = node / "model" / "model.safetensors"
    weights.write_bytes(b"\x00" * weights.stat().st_size)
    assert damage(node) == "model files fail their checksums (model.safetensors)"


def test_checksums_read_files_in_blocks_and_skip_folders(tmp_path):
    import hashlib

    big = b"a" * ((1 << 20) + 7)  # over one read block
    (tmp_path / "big.bin").write_bytes(big)
    (tmp_path / "sub").mkdir()
    assert checksums(tmp_path) == {"big.bin": hashlib.sha256(big).hexdigest()}


def test_write_atomic_replaces_the_file_whole_and_leaves_no_temporary(tmp_path):
    from s2d_bench.nodefiles import write_json

    target = tmp_path / "stage.json"
    target.write_text("old")
    write_json(target, {"seconds": 2.0, "path": tmp_path})  # non-JSON values are written as text
    assert json.loads(target.read_text()) == {"seconds": 2.0, "path": str(tmp_path)}
    assert [p.name for p in tmp_path.iterdir()] == ["stage.json"]


def test_a_node_lock_excludes_every_other_holder_until_it_is_released(tmp_path):
    import fcntl

    from s2d_bench.nodefiles import node_lock

    path = tmp_path / "locks" / "node.lock"

    def try_lock() -> bool:
        with open(path, "a") as other:  # another open file: what a second process holds
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(other, fcntl.LOCK_UN)
            return True

    with node_lock(path):
        assert not try_lock()
    assert try_lock()
