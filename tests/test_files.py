import os
import stat

import pytest

from grafs.files import atomic_path, write_json_atomic, write_text_atomic


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_follow_the_umask_like_ordinary_files(tmp_path, umask):
    previous = os.umask(umask)
    try:
        (tmp_path / "plain.txt").write_text("x")
        write_text_atomic(tmp_path / "report.md", "# report\n")
        write_json_atomic(tmp_path / "campaign.json", {"name": "t"})
    finally:
        os.umask(previous)
    expected = 0o666 & ~umask
    for name in ("plain.txt", "report.md", "campaign.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


def test_an_interrupted_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "result.json"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]
