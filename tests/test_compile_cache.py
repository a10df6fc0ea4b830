"""The compiled programs kept between training runs (compile_cache.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax

from mnistkit import compile_cache


def train_fresh(
    npz: Path, output: Path, cache_setting: str | None, *settings: str
) -> subprocess.CompletedProcess:
    """`mnistkit train` in a fresh process with no JAX cache setting of its own (the tests'
    conftest gives them one), and MNISTKIT_COMPILE_CACHE as given; one epoch unless
    `settings` say otherwise."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    environment.pop(compile_cache.CACHE_ENV, None)
    environment["HOME"] = str(output.parent / "home")
    environment.pop("XDG_CACHE_HOME", None)
    if cache_setting is not None:
        environment[compile_cache.CACHE_ENV] = cache_setting
    command = [sys.executable, "-m", "mnistkit", "train", str(npz), "-o", str(output)]
    command += ["--model", "mlp", "--hidden", "16", "--epochs", "1", "--save-every", "0", *settings]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)


def entries(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


def test_the_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(compile_cache.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.cache_folder() == tmp_path / "xdg" / "mnistkit" / "xla"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert compile_cache.cache_folder() == tmp_path / "home" / ".cache" / "mnistkit" / "xla"
    monkeypatch.setenv(compile_cache.CACHE_ENV, str(tmp_path / "mine"))
    assert compile_cache.cache_folder() == tmp_path / "mine"
    for off in ("off", "OFF", "0", ""):
        monkeypatch.setenv(compile_cache.CACHE_ENV, off)
        assert compile_cache.cache_folder() is None


def test_a_rerun_loads_the_programs_and_trains_the_same_model(synthetic_npz, tmp_path):
    cached = tmp_path / "home" / ".cache" / "mnistkit" / "xla"
    first = train_fresh(synthetic_npz, tmp_path / "first.safetensors", None)
    assert first.returncode == 0, first.stderr
    assert cached.is_dir() and (cached.stat().st_mode & 0o777) == 0o700
    written = {path: path.stat().st_mtime_ns for path in entries(cached)}
    assert written, "the first run kept no program"
    second = train_fresh(synthetic_npz, tmp_path / "second.safetensors", None)
    assert second.returncode == 0, second.stderr
    assert {path: path.stat().st_mtime_ns for path in entries(cached)} == written  # all loaded, none new
    uncached = train_fresh(synthetic_npz, tmp_path / "uncached.safetensors", "off")
    assert uncached.returncode == 0, uncached.stderr
    model = (tmp_path / "uncached.safetensors").read_bytes()
    assert (tmp_path / "first.safetensors").read_bytes() == model
    assert (tmp_path / "second.safetensors").read_bytes() == model
    assert "cache" not in first.stderr + second.stderr  # no warning from jax's cache


def test_a_sweep_of_rates_schedules_and_epochs_runs_the_programs_compiled_for_the_first(
    synthetic_npz, tmp_path
):
    cached = tmp_path / "home" / ".cache" / "mnistkit" / "xla"
    first = train_fresh(synthetic_npz, tmp_path / "first.safetensors", None, "--lr", "0.01")
    assert first.returncode == 0, first.stderr
    written = {path: path.stat().st_mtime_ns for path in entries(cached)}
    sweep = {"lr": ("--lr", "0.003"), "schedule": ("--schedule", "one-cycle"), "epochs": ("--epochs", "3")}
    for name, settings in sweep.items():
        run = train_fresh(synthetic_npz, tmp_path / f"{name}.safetensors", None, *settings)
        assert run.returncode == 0, run.stderr
        kept = {path: path.stat().st_mtime_ns for path in entries(cached)}
        assert {path: kept[path] for path in written} == written, name  # loaded, not compiled
        new = {path.name.split("-")[0] for path in kept.keys() - written.keys()}
        assert new <= {"jit_learning_rate_schedule"}, name  # only the rates, a program of 5 kB
    models = {name: (tmp_path / f"{name}.safetensors").read_bytes() for name in ["first", *sweep]}
    assert len(set(models.values())) == len(models)  # each setting trained a model of its own


def test_a_folder_under_a_file_leaves_training_as_it_was(synthetic_npz, tmp_path):
    (tmp_path / "a-file").write_text("")
    folder = tmp_path / "a-file" / "xla"
    result = train_fresh(synthetic_npz, tmp_path / "model.safetensors", str(folder))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "model.safetensors").exists()
    assert result.stderr.splitlines()[0] == (
        f"compile cache {folder}: cannot be made (Not a directory); compiling every time "
        f"(set {compile_cache.CACHE_ENV})"
    )


def test_a_folder_others_can_write_is_not_trusted(synthetic_npz, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    result = train_fresh(synthetic_npz, tmp_path / "model.safetensors", str(shared))
    assert result.returncode == 0, result.stderr
    assert entries(shared) == []
    assert f"compile cache {shared}: others may write to it (chmod go-w {shared})" in result.stderr


def test_a_folder_under_one_others_may_rename_in_is_not_trusted(tmp_path):
    """The folder was checked alone: another user could rename it away, and put their own in
    its place, while a run used it. Under a sticky folder such as /tmp, no one else can."""
    shared = tmp_path / "shared"
    (shared / "mnistkit").mkdir(mode=0o755, parents=True)
    shared.chmod(0o777)
    assert compile_cache._problem(shared / "mnistkit" / "xla") == (
        f"others may rename what the folder above it, {shared}, holds (chmod o-w {shared})"
    )
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o777)
    empty.chmod(0o777)
    assert compile_cache._problem(empty / "mnistkit" / "xla") == (
        f"others may rename what the folder above it, {empty}, holds (chmod o-w {empty})"
    )
    assert list(empty.iterdir()) == [], "a refused place is left as it was"
    shared.chmod(0o775)  # a umask of 002: the group is the user's own
    assert compile_cache._problem(shared / "mnistkit" / "xla") is None
    shared.chmod(0o1777)
    assert compile_cache._problem(shared / "mnistkit" / "xla") is None


def test_a_link_is_followed_to_the_folder_it_names(synthetic_npz, tmp_path):
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    result = train_fresh(synthetic_npz, tmp_path / "model.safetensors", str(tmp_path / "link"))
    assert result.returncode == 0, result.stderr
    assert entries(tmp_path / "real") and (tmp_path / "link").is_symlink()


def test_jax_settings_are_as_they_were_after_training(synthetic_npz, tmp_path):
    """A notebook's own programs after `mnistkit.train` are not kept in mnistkit's folder."""
    script = f"""
import jax, jax.numpy as jnp, mnistkit
mnistkit.train({str(synthetic_npz)!r}, model="mlp", hidden=(16,), epochs=1)
print(jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # any program would be kept
jax.jit(lambda x: jnp.sin(x) * 3)(jnp.ones(7)).block_until_ready()
"""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    environment[compile_cache.CACHE_ENV] = str(tmp_path / "xla")
    result = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "1.0"]
    kept = [path.name for path in entries(tmp_path / "xla")]
    assert kept and not any("lambda" in name for name in kept), kept


def test_a_full_folder_loses_its_programs_used_longest_ago(tmp_path, monkeypatch):
    folder = tmp_path / "xla"
    folder.mkdir(mode=0o700)
    for age, name in enumerate(["newest", "recent", "older", "old", "oldest"]):
        program = folder / f"jit_{name}-{age}{compile_cache.PROGRAM_SUFFIX}"
        program.write_bytes(bytes(100))
        when = 1_700_000_000 - age * 86_400
        os.utime(program, (when, when))
    read_today = folder / f"jit_read-9{compile_cache.PROGRAM_SUFFIX}"  # written long ago, read lately
    read_today.write_bytes(bytes(100))
    os.utime(read_today, (1_700_000_000 + 60, 1_600_000_000))
    (folder / "notes.txt").write_bytes(bytes(1000))  # not jax's: neither counted nor deleted
    (folder / f"elsewhere{compile_cache.PROGRAM_SUFFIX}").symlink_to(tmp_path / "missing")
    monkeypatch.setenv(compile_cache.CACHE_ENV, str(folder))
    monkeypatch.setattr(compile_cache, "LIMIT_BYTES", 450)
    lines = []
    users_own = jax.config.jax_compilation_cache_dir  # the tests' conftest sets one
    jax.config.update("jax_compilation_cache_dir", None)
    try:
        with compile_cache.compile_cache(lines.append):
            pass
    finally:
        jax.config.update("jax_compilation_cache_dir", users_own)
    assert sorted(path.name.split("-")[0] for path in folder.iterdir()) == [
        "elsewhere",
        "jit_newest",
        "jit_read",
        "jit_recent",
        "notes.txt",
    ]  # 600 bytes of programs, down to 300 (at most three quarters of 450)
    assert lines == [f"compile cache {folder}: deleted 3 programs used longest ago, to keep it under 0 MB"]
    assert compile_cache._trim(folder, 450) == 0  # under the limit: nothing more goes
    assert len(list(folder.iterdir())) == 5
