"""The trainer's run folder: config checks, the lock, leftovers, a full disk, warm starts, precision."""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffedu import runs, train

ROOT = Path(__file__).resolve().parents[1]
LINEAR = {"name": "tiny_linear", "task": "tests.tiny_task:LinearTask", "model": {"width": 4}, "steps": 4,
          "batch_size": 8, "lr": 0.05, "warmup": 1, "log_every": 1, "ckpt_every": 2, "ema_decay": 0.5}


@pytest.fixture(autouse=True)
def importable_tests(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))


def write(tmp_path, name="c.json", **changes) -> str:
    path = tmp_path / name
    path.write_text(json.dumps({k: v for k, v in {**LINEAR, **changes}.items() if v is not None}))
    return str(path)


def run(cfg, out, *extra):
    train.main([cfg, "--out", str(out), "--device", "cpu", *extra])


@pytest.mark.parametrize("key, value, message", [
    ("ckpt_every", 0, "'ckpt_every' must be a positive int"), ("log_every", 0, "'log_every' must be a positive int"),
    ("batch_size", 0, "'batch_size' must be a positive int"), ("seed", "1", "'seed' must be an int"),
    ("seed", 1.5, "'seed' must be an int"), ("ema_decay", 1.0, r"'ema_decay' must be a number in \[0, 1\)"),
    ("ema_decay", -0.1, "'ema_decay'"), ("lr", float("nan"), "'lr' must be a positive number"),
    ("steps", -1, "'steps' must be an int >= 0"), ("betas", [0.9], "'betas' must be two numbers"),
    ("lr_decay", "linear", "'lr_decay' must be 'none' or 'cosine'"), ("cpu_autocast", True, "no longer a setting"),
])
def test_bad_settings_are_refused_before_training(tmp_path, key, value, message):
    with pytest.raises(ValueError, match=message):
        runs.load_config(write(tmp_path, **{key: value}))


def test_invalid_json_names_the_file_and_line(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{\n "name": "x",\n "steps": 3,,\n}')
    with pytest.raises(ValueError, match=r"broken\.json is not valid JSON: line 3"):
        runs.load_config(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="must be a JSON object"):
        runs.load_config(bad)


def test_cosine_decay_reaches_its_floor():
    cfg = {**runs.DEFAULTS, **LINEAR, "lr": 1.0, "warmup": 0, "steps": 100, "lr_decay": "cosine", "min_lr_ratio": 0.1}
    assert train.lr_at(0, cfg) == pytest.approx(1.0)
    assert train.lr_at(50, cfg) == pytest.approx(0.55)
    assert train.lr_at(100, cfg) == pytest.approx(0.1) and train.lr_at(500, cfg) == pytest.approx(0.1)


def test_leftover_temporary_files_are_removed_on_start(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "state.safetensors.tmp1234").write_bytes(b"half a file")
    (out / "state.json.tmp").write_text("{")
    run(write(tmp_path), out)
    assert "removed temporary files" in capsys.readouterr().out
    assert not list(out.glob("*.tmp*")) and (out / "state.safetensors").exists()


def env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "DIFFEDU_DEVICE": "cpu"}


def test_a_run_folder_is_locked_and_a_stale_lock_is_taken_over(tmp_path, capsys):
    cfg, out = write(tmp_path, steps=10**9), tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "diffedu.train", cfg, "--out", str(out)], cwd=ROOT, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 900  # a bound, not a timing assumption: the child only has to start
        while not (out / "state.json").exists():
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline
            time.sleep(0.2)
        with pytest.raises(RuntimeError, match=f"in use by another trainer \\(pid {proc.pid}\\)"):
            run(write(tmp_path, steps=3), out)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    # the kill may land between the two writes of a save: the safetensors file is the state that counts
    from safetensors import safe_open
    with safe_open(str(out / "state.safetensors"), "pt") as f:
        step = json.loads(f.metadata()["step"])
    run(write(tmp_path, steps=10**9), out, "--steps", str(step + 2))
    assert f"took over the lock of {out} left by pid {proc.pid}" in capsys.readouterr().out
    assert json.loads((out / "state.json").read_text())["step"] == step + 2


def test_a_state_json_one_save_behind_is_brought_level_on_resume(tmp_path):
    """A kill between the two writes of a save leaves state.json behind state.safetensors."""
    cfg, out = write(tmp_path), tmp_path / "run"
    run(cfg, out, "--steps", "2")
    meta = json.loads((out / "state.json").read_text())
    (out / "state.json").write_text(json.dumps({**meta, "step": 0}))
    run(cfg, out, "--steps", "2")
    assert json.loads((out / "state.json").read_text())["step"] == 2


def test_a_full_disk_gives_one_message_and_keeps_the_last_state(tmp_path, monkeypatch):
    cfg, out = write(tmp_path), tmp_path / "run"
    run(cfg, out, "--steps", "2")
    before = load_file(str(out / "state.safetensors"))

    def full(*args, **kwargs):
        Path(args[1]).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(runs, "save_file", full)
    with pytest.raises(OSError, match=f"could not write the training state to the folder {out}.*No space left"):
        run(cfg, out, "--steps", "4")
    after = load_file(str(out / "state.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before) and not list(out.glob("*.tmp*"))
    assert json.loads((out / "state.json").read_text())["step"] == 2


def test_resume_is_allowed_after_a_new_default_setting(tmp_path):
    cfg, out = write(tmp_path), tmp_path / "run"
    run(cfg, out, "--steps", "2")
    meta_path = out / "state.json"
    from safetensors import safe_open
    with safe_open(str(out / "state.safetensors"), "pt") as f:
        meta = {k: json.loads(v) for k, v in f.metadata().items()}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    del meta["config"]["lr_decay"]  # as if saved before the setting existed
    runs.atomic_save(tensors, out / "state.safetensors", meta)
    meta_path.write_text(json.dumps(meta))
    run(cfg, out, "--steps", "4")
    assert json.loads(meta_path.read_text())["step"] == 4


@pytest.fixture
def assets(tmp_path, monkeypatch):
    (tmp_path / "assets" / "checkpoints").mkdir(parents=True)
    monkeypatch.setenv("DIFFEDU_ASSETS", str(tmp_path / "assets"))
    return tmp_path / "assets" / "checkpoints"


def test_warm_start_keeps_the_lineage(tmp_path, assets):
    run(write(tmp_path, steps=4), tmp_path / "first", "--ship")
    first = json.loads((assets / "tiny_linear.json").read_text())
    shipped = load_file(str(assets / "tiny_linear.safetensors"))
    trainer = train.Trainer(runs.load_config(write(tmp_path, steps=3)), tmp_path / "second", "cpu")
    trainer.warm_start(assets / "tiny_linear.safetensors")
    for k, v in trainer.model.state_dict().items():
        torch.testing.assert_close(v, shipped[k].float())
    run(write(tmp_path, steps=3), tmp_path / "second", "--init", str(assets / "tiny_linear.safetensors"), "--ship")
    card = json.loads((assets / "tiny_linear.json").read_text())
    assert [r["steps"] for r in card["runs"]] == [4, 3] and card["runs"][1]["init"] == "tiny_linear"
    assert card["totals"]["steps"] == 7 and card["totals"]["examples"] == 7 * 8 and card["totals"]["runs"] == 2
    assert card["runs"][0] == first["runs"][0] and card["precision"] in ("fp32", "bf16")
    assert "--init" in card["command"]


def test_learning_curve_counts_every_run_of_the_lineage():
    card = {"runs": [{"characters": 100, "curve": [{"step": 5, "characters": 50, "val": 3.0},
                                                   {"step": 10, "characters": 100, "val": 2.0}]},
                     {"characters": 40, "curve": [{"step": 4, "characters": 40, "val": 1.5}]},
                     {"characters": 10}]}
    points = runs.learning_curve(card)
    assert [(p["run"], p["step"], p["characters"], p["val"]) for p in points] == [
        (0, 5, 50, 3.0), (0, 10, 100, 2.0), (1, 4, 140, 1.5)]
    assert card["runs"][1]["curve"][0]["characters"] == 40          # the card is left as it was
    assert runs.learning_curve({"steps": 3, "command": "x"}) == []  # an old card without curves


def test_warm_start_refuses_another_shape_or_task(tmp_path, assets):
    run(write(tmp_path, steps=2), tmp_path / "first", "--ship")
    init = str(assets / "tiny_linear.safetensors")
    with pytest.raises(ValueError, match=r"model differs from this config's in \['width'\]"):
        run(write(tmp_path, model={"width": 5}), tmp_path / "b", "--init", init)
    with pytest.raises(ValueError, match="trained by task 'tests.tiny_task:LinearTask'"):
        run(write(tmp_path, task="tests.tiny_task:OtherTask"), tmp_path / "c", "--init", init)
    run(write(tmp_path, steps=2), tmp_path / "d", "--init", init)
    with pytest.raises(ValueError, match="continues a run started from 'tiny_linear'"):
        run(write(tmp_path, steps=3), tmp_path / "d", "--init", str(tmp_path / "elsewhere" / "other.safetensors"))


@pytest.mark.parametrize("native, allowed, want", [(False, True, "fp32"), (True, True, "bf16"), (True, False, "fp32")])
def test_precision_follows_the_hardware(tmp_path, monkeypatch, native, allowed, want):
    monkeypatch.setattr(train, "native_bf16", lambda device: native)
    trainer = train.Trainer(runs.load_config(write(tmp_path, autocast=allowed)), tmp_path / "r", "cpu")
    assert trainer.precision == want
