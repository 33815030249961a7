"""Atomic writes keep the permissions a plain `open` would give: params.yaml rewritten by
`--set`, datasets and published files must stay readable to everyone who could read them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from videorft.io import atomic_write_bytes, atomic_write_text


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_file_gets_the_umask_mode_not_owner_only(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "new.txt", "x")
    umask = os.umask(0o022)
    os.umask(umask)
    assert _mode(tmp_path / "new.txt") == 0o666 & ~umask  # 0o644 under the usual 0o022


@pytest.mark.parametrize("mode", [0o640, 0o664, 0o600])
def test_rewriting_a_file_keeps_its_mode(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("a: 1\n")
    path.chmod(mode)
    atomic_write_bytes(path, b"a: 2\n")
    assert path.read_bytes() == b"a: 2\n" and _mode(path) == mode
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_json_nested_beyond_the_parser_is_a_one_line_error(tmp_path: Path) -> None:
    """An annotation nested 50,000 deep: DataValidationError naming the file, no
    RecursionError (read_json serves every JSON annotation format)."""
    from videorft.errors import DataValidationError
    from videorft.io import read_json, read_jsonl

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 50_000 + "]" * 50_000)
    with pytest.raises(DataValidationError, match=r"deep\.json: .*nested too deeply"):
        read_json(deep)
    lines = tmp_path / "deep.jsonl"
    lines.write_text('{"a": 1}\n' + '{"a":' * 50_000 + "1" + "}" * 50_000 + "\n")
    with pytest.raises(DataValidationError, match=r"deep\.jsonl: line 2: .*nested too deeply"):
        list(read_jsonl(lines))
