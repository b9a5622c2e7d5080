"""Memory (issue 26 item 2): a batch that clearly does not fit is refused before the first
update, naming --batch-size and --input-size; an allocation that fails names them too; a batch
larger than the list is a warning line."""

import pytest
import tensorflow as tf

import conftest
from deeplab_resnet import training
from deeplab_resnet.cli import train_flags
from deeplab_resnet.data import shapes
from deeplab_resnet.errors import SettingError
from deeplab_resnet.training import TrainConfig, memory


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shapes.make_shapes_dataset(tmp_path_factory.mktemp("shapes"), num_train=2,
                                      num_val=1, size=(40, 48), seed=4)


def tiny_args(data, snapshot_dir, *extra):
    return ["--data-dir", data["root"], "--data-list", data["train"], "--model", "tiny",
            "--num-classes", str(len(shapes.CLASSES)), "--input-size", "32,32",
            "--num-steps", "1", "--save-num-images", "0", "--snapshot-dir", str(snapshot_dir),
            *extra]


def run_train(argv, capfd):
    return conftest.run_command(lambda a: train_flags.main(training.TRAIN, a), argv, capfd)


def test_the_estimate_grows_with_the_model_the_crop_and_the_batch():
    one = memory.update_bytes("resnet101", (321, 321), 1)
    assert memory.update_bytes("resnet101", (321, 321), 2) > one
    assert memory.update_bytes("resnet101", (513, 513), 1) > one
    assert memory.update_bytes("tiny", (321, 321), 1) < one / 4
    assert memory.update_bytes("resnet152", (321, 321), 1) > one
    # The case of the issue: ResNet-101, batch 64 at 321x321, far beyond a 24 GB machine
    # (calibrated: ~1.1 GB for one image at 321, benchmarks/bench_memory.py).
    assert memory.update_bytes("resnet101", (321, 321), 64) > 30 * 2**30
    assert 0.8 * 2**30 < one < 1.5 * 2**30


def test_available_memory_is_read_from_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   2048 kB\n")
    assert memory.available_bytes(str(meminfo)) == 2048 * 1024
    meminfo.write_text("MemTotal: 1 kB\n")
    assert memory.available_bytes(str(meminfo)) is None
    assert memory.available_bytes(str(tmp_path / "none")) is None


def test_a_batch_that_clearly_does_not_fit_is_refused_before_the_first_update(data, tmp_path,
                                                                              monkeypatch,
                                                                              capfd):
    monkeypatch.setattr(memory, "available_bytes", lambda: 10 * 2**20)  # 10 MiB left
    config = TrainConfig(data_dir=data["root"], data_list=data["train"], variant="tiny",
                         num_classes=len(shapes.CLASSES), input_size=(32, 32), num_steps=1,
                         batch_size=1, snapshot_dir=str(tmp_path / "api"))
    with pytest.raises(SettingError) as refused:
        training.train(config)
    assert set(refused.value.fields) >= {"batch_size", "input_size"}
    assert "needs about" in str(refused.value) and "0.0 GiB available" in str(refused.value)
    out = tmp_path / "cli"
    status, _, stderr = run_train(tiny_args(data, out, "--batch-size", "1"), capfd)
    lines = stderr.strip().splitlines()
    assert status == 2 and len(lines) == 1, stderr
    assert "--batch-size 1 x --input-size 32,32 needs about" in lines[0]
    assert "give a smaller --batch-size or --input-size" in lines[0]
    assert not out.exists()  # nothing written, not even the folder


def test_a_batch_that_fits_is_not_refused(data, tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: 64 * 2**30)
    config = TrainConfig(data_dir=data["root"], data_list=data["train"], variant="tiny",
                         num_classes=len(shapes.CLASSES), input_size=(32, 32), num_steps=1,
                         batch_size=1, save_num_images=0, snapshot_dir=str(tmp_path / "s"))
    assert training.train(config).updates == 1


def test_a_failed_allocation_names_the_batch_flags(data, tmp_path, monkeypatch, capfd):
    from deeplab_resnet.training import step

    def exhausted(self, *args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")

    monkeypatch.setattr(step.Trainer, "step", exhausted)
    status, _, stderr = run_train(tiny_args(data, tmp_path / "s", "--batch-size", "1"), capfd)
    lines = stderr.strip().splitlines()
    assert status == 1 and len(lines) == 1, stderr
    assert lines[0] == "error: out of memory (try a smaller --batch-size or --input-size)"


def test_a_batch_larger_than_the_list_is_a_warning_line(data, tmp_path, capfd):
    status, stdout, stderr = run_train(tiny_args(data, tmp_path / "s", "--batch-size", "3"),
                                       capfd)
    assert status == 0, stderr
    assert stderr.strip().splitlines() == [
        f"warning: --batch-size 3 is more than the 2 images of {data['train']}: each "
        "mini-batch repeats images"]
    assert "finished: " in stdout
