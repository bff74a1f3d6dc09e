"""Several processes, one run (edgeprune.distributed): real gloo process groups on 127.0.0.1.

The fast tests spawn 2 CPU processes with torch.multiprocessing; the end-to-end runs of
``torchrun -m edgeprune prune`` are slow (a minute on 2 busy cores) or need GPUs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from edgeprune import distributed
from edgeprune.data import load_dataset
from edgeprune.information import MIConfig, unit_information
from edgeprune.models import create_model
from edgeprune.units import list_units

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    distributed.setup("cpu")


def _spawn(fn, world: int, *args) -> None:
    import torch.multiprocessing as mp

    mp.spawn(fn, args=(world, _free_port(), *args), nprocs=world, join=True)


# ---------------------------------------------------------------- one process: no-ops


def test_one_process_is_unchanged(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.setup("cuda:3") == "cuda:3"  # untouched, nothing initialised
    assert not distributed.active() and distributed.is_main()
    assert (distributed.rank(), distributed.world_size()) == (0, 1)
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    assert distributed.rank_seed(7) == 7
    assert distributed.sharded_rows(lambda x: {0: x * 2}, torch.arange(5))[0].tolist() == \
        [0, 2, 4, 6, 8]


@pytest.mark.parametrize("n,ranks", [(10, 2), (7, 3), (2, 4), (1000, 8)])
def test_shards_cover_every_row_once_in_order(n, ranks):
    bounds = [distributed.shard_bounds(n, ranks, r) for r in range(ranks)]
    rows = [i for lo, hi in bounds for i in range(lo, hi)]
    assert rows == list(range(n))
    assert max(hi - lo for lo, hi in bounds) - min(hi - lo for lo, hi in bounds) <= 1


# ---------------------------------------------------------------- 2 gloo processes


N_MI = 61  # samples for the MI test: an uneven split over 2 ranks (31 + 30)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    """Each rank: MI scores with a sharded capture, a broadcast, one epoch of DDP training."""
    from edgeprune.train import TrainConfig, train

    _join(rank, world, port)
    model, x, y = _mi_problem(N_MI)
    scores = unit_information(model, x, y, range(len(list_units(model))), MIConfig(),
                              batch_size=16)
    decided = distributed.broadcast_object({"rank": rank} if rank == 0 else None)
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=1)
    losses = train(model, load_dataset("digits"), TrainConfig(epochs=1, batch_size=64, lr=0.05,
                                                               seed=rank))  # seeds differ
    torch.save({"scores": scores, "decided": decided, "world": distributed.world_size(),
                "state": model.state_dict(), "losses": losses}, Path(out) / f"rank{rank}.pt")
    distributed.cleanup()


def _mi_problem(n: int):
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=1).eval()
    data = load_dataset("digits")
    s = data.sample("train", n, seed=0)
    return model, torch.from_numpy(data.normalize(s.x)), torch.from_numpy(s.y.astype("int64"))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    """What each of 2 gloo processes computed (one spawn for all the tests below)."""
    out = tmp_path_factory.mktemp("ranks")
    _spawn(_worker, 2, str(out))
    return [torch.load(out / f"rank{r}.pt") for r in (0, 1)]


def test_sharded_mi_capture_equals_one_process(two_ranks):
    model, x, y = _mi_problem(N_MI)
    single = unit_information(model, x, y, range(len(list_units(model))), MIConfig())
    for got in two_ranks:
        assert got["world"] == 2 and got["decided"] == {"rank": 0}  # rank 0's object on both
        assert got["scores"].keys() == single.keys()
        for i, v in single.items():
            assert got["scores"][i] == pytest.approx(v, rel=1e-6, abs=1e-9)


def test_ddp_fine_tuning_leaves_every_rank_with_the_same_model(two_ranks):
    a, b = two_ranks
    assert a["losses"] == b["losses"]  # the epoch's loss, averaged over both ranks
    for k, v in a["state"].items():  # weights by DDP, BatchNorm statistics by sync_buffers
        assert torch.equal(v, b["state"][k]), k
    torch.manual_seed(0)
    assert not torch.equal(create_model("resnet20", num_classes=10, in_channels=1)
                           .state_dict()["fc.weight"], a["state"]["fc.weight"])


# ---------------------------------------------------------------- torchrun, end to end


def _prune_args(model: Path, out: Path, device: str) -> list[str]:
    return ["prune", str(model), "--data", "digits", "--out", str(out), "--stages", "1",
            "--finetune-epochs", "1", "--samples", "200", "--seed", "0",
            "--max-error-increase", "0.2", "--device", device]


def _run(cmd: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "toolchain"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def _torchrun(nproc: int) -> list[str]:
    exe = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    return [exe, "--nproc-per-node", str(nproc), "--master-addr", "127.0.0.1",
            "--master-port", str(_free_port()), "-m", "edgeprune"]


def _compare_prune(tmp_path: Path, model: Path, device: str, nproc: int) -> None:
    _run([sys.executable, "-m", "edgeprune", *_prune_args(model, tmp_path / "one", device)])
    _run([*_torchrun(nproc), *_prune_args(model, tmp_path / "many", device)])
    one, many = (json.loads((tmp_path / d / "mspic.json").read_text()) for d in ("one", "many"))
    s1, s2 = one["stages"][0], many["stages"][0]
    assert s1["removed"] and s2["removed"] == s1["removed"]
    assert s2["scores"] == pytest.approx(s1["scores"], rel=1e-6)
    assert abs(s2["val_error_finetuned"] - s1["val_error_finetuned"]) <= 0.03
    assert (tmp_path / "many" / "pruned.pt").is_file()
    assert [p.name for p in (tmp_path / "many").rglob(".*")] == []  # nothing half-written


@pytest.mark.slow
def test_torchrun_prune_on_2_cpu_processes_matches_one(tmp_path, resnet20_digits_path):
    _compare_prune(tmp_path, resnet20_digits_path, "cpu", 2)


@pytest.mark.gpu
def test_torchrun_prune_on_cuda(tmp_path, resnet20_digits_path):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    _compare_prune(tmp_path, resnet20_digits_path, "cuda", max(1, torch.cuda.device_count()))


@pytest.mark.slow
def test_torchrun_build_on_2_cpu_processes(tmp_path, resnet20_digits_path):
    # the prune stage on both ranks, export/quantize/profile/report on rank 0 alone
    _run([*_torchrun(2), "build", str(resnet20_digits_path), "--target", "jetson-nano",
          "--data", "digits", "--out", str(tmp_path / "b"), "--stages", "1",
          "--finetune-epochs", "1", "--samples", "200", "--max-error-increase", "0.2"])
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert [v["name"] for v in report["variants"]][::2] == ["original", "pruned"]
    assert json.loads((tmp_path / "b" / "mspic.json").read_text())["stages"][0]["removed"]
