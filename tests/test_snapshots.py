"""Training snapshot folders: what an interrupted save leaves is cleared on the next run."""

import logging

from deeplab_resnet.training import snapshots


def test_unfinished_saves_are_removed_when_a_run_starts(tmp_path, caplog):
    """A process killed mid-save leaves TensorFlow's `model.ckpt-N_temp/`: the next run's
    chief removes it, and nothing else."""
    leftover = tmp_path / "model.ckpt-7_temp"
    (leftover / "part-00000-of-00001").mkdir(parents=True)
    kept = [tmp_path / "model.ckpt-6.index", tmp_path / "notes_temp", tmp_path / "model.ckpt-x"]
    kept[0].write_bytes(b"")
    kept[1].mkdir()
    kept[2].write_text("a user's file")
    with caplog.at_level(logging.INFO, logger="deeplab_resnet"):
        with snapshots.save_dir(str(tmp_path), chief=True) as folder:
            assert folder == str(tmp_path)
    assert not leftover.exists() and all(path.exists() for path in kept)
    assert [r.getMessage() for r in caplog.records] == [
        f"removed {leftover} (left by a save that did not finish)"]


def test_other_workers_leave_the_chief_folder_alone(tmp_path):
    leftover = tmp_path / "model.ckpt-7_temp"
    leftover.mkdir()
    with snapshots.save_dir(str(tmp_path), chief=False) as folder:
        assert folder != str(tmp_path)
    assert leftover.exists()
