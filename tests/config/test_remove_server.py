"""Removing a saved server from the user config: only its `[[servers]]` entry goes; the rest of the text, its comments,
the file's mode and a symlink to it stay; a file it cannot take the entry out of cleanly is left alone."""

from __future__ import annotations

import pytest

from app.errors import ConfigError
from app.settings.user import load_user_config, remove_server, save_server

TEXT = """# notes-tui, mine
[models]
quota_gb = 50

[[servers]]  # the first box
url = "gpu-n57:48362"
name = "a"

# the second box
[[servers]]
url = "http://gpu-n58:1"

[slurm]
cluster = "gpu"
"""


def test_only_the_entry_goes_comments_mode_and_symlink_kept(tmp_path):
    real = tmp_path / "dotfiles" / "config.toml"
    real.parent.mkdir()
    real.write_text(TEXT)
    real.chmod(0o640)
    link = tmp_path / "config.toml"
    link.symlink_to(real)
    gone = remove_server(link, "http://gpu-n57:48362")  # saved without http://, matched as it is read
    assert (gone.url, gone.name) == ("http://gpu-n57:48362", "a")
    assert link.is_symlink() and oct(real.stat().st_mode & 0o777) == "0o640"
    assert real.read_text() == TEXT.replace('[[servers]]  # the first box\nurl = "gpu-n57:48362"\nname = "a"\n\n', "")
    remove_server(link, "http://gpu-n58:1")
    assert real.read_text() == "# notes-tui, mine\n[models]\nquota_gb = 50\n\n# the second box\n\n[slurm]\ncluster = \"gpu\"\n"
    config = load_user_config(real)
    assert config.servers == [] and config.models.quota_gb == 50 and config.slurm.cluster == "gpu"
    assert sorted(p.name for p in real.parent.iterdir()) == ["config.toml"]  # no temp file left


def test_what_save_server_wrote_is_removed_back_to_the_text_before(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[models]\nquota_gb = 60\n")
    save_server(path, "http://gpu-n57:48362", "l40s-a")
    save_server(path, "http://gpu-n58:1")
    remove_server(path, "http://gpu-n58:1")
    remove_server(path, "http://gpu-n57:48362")
    assert path.read_text() == "[models]\nquota_gb = 60\n"


def test_a_server_not_saved_or_not_in_its_own_entry_is_refused_and_the_file_left_alone(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(TEXT)
    with pytest.raises(ConfigError, match="http://gpu-n59:1 is not saved here — nothing to remove"):
        remove_server(path, "http://gpu-n59:1")
    inline = 'servers = [{url = "http://gpu-n57:48362"}]\n'
    path.write_text(inline)
    with pytest.raises(ConfigError, match="could not be taken out of the file on its own — remove its"):
        remove_server(path, "http://gpu-n57:48362")
    assert path.read_text() == inline
