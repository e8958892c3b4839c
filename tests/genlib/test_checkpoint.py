"""Tests for genlib.checkpoint: atomic writes, the versioned weights format, and refusal (with the file
named) of missing, truncated, random, foreign, newer and malicious checkpoint files."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from genlib.checkpoint import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, CheckpointError, atomic_write,
                               atomic_write_text, load_weights, read_json, save_weights, write_json)


class Exploit:
    """Unpickling this writes a marker file: what a hostile checkpoint could do without weights_only."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def payload() -> dict:
    gen = torch.Generator().manual_seed(0)
    return {"family": "vae", "run_key": "abc", "sample_shape": [1, 8, 8], "kind": "image",
            "state_dict": {"w": torch.randn(3, 4, generator=gen), "b": torch.zeros(4)}}


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_save_and_load_round_trip(tmp_path):
    path = save_weights(tmp_path / "run" / "model.pt", payload())
    data = load_weights(path)
    assert data["format"] == CHECKPOINT_FORMAT and data["version"] == CHECKPOINT_VERSION
    assert (data["family"], data["sample_shape"], data["kind"]) == ("vae", [1, 8, 8], "image")
    for k, v in payload()["state_dict"].items():
        assert torch.equal(data["state_dict"][k], v)
    assert leftovers(path.parent) == []


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "config.yaml"
    atomic_write_text(target, "old: 1\n")

    def half_write(p: Path) -> None:
        p.write_text("new: ")  # a partial file under the temporary name ...
        raise OSError("disk full")  # ... then a crash

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_write)
    assert target.read_text() == "old: 1\n"
    assert leftovers(tmp_path) == []


def test_atomic_write_never_shows_a_partial_file_under_the_final_name(tmp_path):
    target = tmp_path / "model.pt"
    seen = []

    def write(p: Path) -> None:
        assert p != target and p.parent == target.parent  # written beside the target, then renamed
        p.write_bytes(b"x" * 10)
        seen.append(target.exists())

    atomic_write(target, write)
    assert seen == [False] and target.read_bytes() == b"x" * 10


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint '.*model.pt' does not exist"):
        load_weights(tmp_path / "model.pt")


def test_truncated_checkpoint_is_refused_naming_the_file(tmp_path):
    path = save_weights(tmp_path / "model.pt", payload())
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match=rf"checkpoint '{path}' is corrupt"):
        load_weights(path)


def test_random_bytes_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                   dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(CheckpointError, match=rf"checkpoint '{path}' is corrupt"):
        load_weights(path)


@pytest.mark.parametrize("how", ["torch_save", "plain_pickle"])
def test_malicious_pickle_is_refused_by_weights_only_loading(tmp_path, how):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "model.pt"
    evil = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "state_dict": {}, "x": Exploit(marker)}
    if how == "torch_save":
        torch.save(evil, path)
    else:
        path.write_bytes(pickle.dumps(evil, protocol=2))
    # the file really is hostile: a full unpickle would run the payload
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=rf"checkpoint '{path}' is corrupt or not a genbench checkpoint "
                                              r"\(it holds objects that safe \(weights-only\) loading refuses"):
        load_weights(path)
    assert not marker.exists()
    pickle.loads(pickle.dumps(Exploit(marker)))  # control: unsafe unpickling would have run it
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize("content", [{"state_dict": {}}, [1, 2], {"format": "other"}])
def test_torch_files_that_are_not_genbench_checkpoints_are_refused(tmp_path, content):
    path = tmp_path / "model.pt"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=rf"checkpoint '{path}' is not a genbench checkpoint "
                                              rf"\(no '{CHECKPOINT_FORMAT}' header\)"):
        load_weights(path)


def test_other_format_versions_are_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION + 1, "state_dict": {}}, path)
    with pytest.raises(CheckpointError, match=rf"checkpoint '{path}' has format version {CHECKPOINT_VERSION + 1}; "
                                              rf"this genbench reads version {CHECKPOINT_VERSION}"):
        load_weights(path)


def test_json_round_trip_and_errors(tmp_path):
    path = write_json(tmp_path / "meta.json", {"b": 1, "a": [1.5, "x"], "when": Path("/x")})
    assert read_json(path) == {"a": [1.5, "x"], "b": 1, "when": "/x"}
    assert leftovers(tmp_path) == []
    with pytest.raises(CheckpointError, match=r"'.*nope.json' does not exist"):
        read_json(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"'.*bad.json' is not valid JSON"):
        read_json(tmp_path / "bad.json")
