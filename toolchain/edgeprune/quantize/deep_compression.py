"""The ``shared`` precision: Deep Compression's weight sharing, centroid fine-tuning and Huffman
coding (see :mod:`edgeprune.quantize.shared`) as a quantize-stage maker.

Writes ``model.shared.onnx`` (the decoded float weights: what a runtime executes) and
``model.shared.packed`` (codebooks + Huffman-coded indices + the other tensors raw), and checks
that the packed file loads back to exactly the fine-tuned state dict.
"""

from __future__ import annotations

import copy

import torch

from edgeprune.errors import EdgepruneError

DEPLOYMENT_NOTE = ("weight sharing shrinks storage and download size only: TensorRT and ONNX "
                   "Runtime run the decoded float weights, so latency and DRAM traffic per "
                   "inference are those of the float model")


def make_shared(job) -> dict:
    from edgeprune.export import export_onnx
    from edgeprune.quantize import set_metadata
    from edgeprune.quantize import shared as S
    from edgeprune.train import TrainConfig, evaluate, train

    cfg = job.config
    if not 1 <= cfg.shared_bits <= S.MAX_BITS:
        raise EdgepruneError(f"--shared-bits must be in 1..{S.MAX_BITS}, got {cfg.shared_bits}")
    model = copy.deepcopy(job.loaded.model).cpu()
    names = S.shareable_layers(model)
    if not names:
        from edgeprune.pt2 import no_layers_hint

        raise EdgepruneError("the model has no Conv/Linear layer whose weights can be shared"
                             f"{no_layers_hint(model)}; use fp16 or int8")
    before_share = evaluate(model, job.data, cfg.eval_split).accuracy
    S.share_weights(model, cfg.shared_bits, names)
    before = evaluate(model, job.data, cfg.eval_split).accuracy
    from edgeprune.quantize import _epoch_progress

    losses = train(model, job.data, TrainConfig(
        epochs=cfg.shared_epochs, batch_size=cfg.binary_batch_size, lr=cfg.shared_lr,
        seed=cfg.seed, device=cfg.device), _epoch_progress(job, "shared-weight fine-tune"))
    model.cpu()
    after = evaluate(model, job.data, cfg.eval_split).accuracy
    S.freeze_shared(model, names)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    shared = S.shared_tensors(state, names, 2 ** cfg.shared_bits)
    packed_path = job.stage / "model.shared.packed"
    packed_bytes = S.write_packed(packed_path, state, shared)
    _check_round_trip(S.load_packed(packed_path), state)
    path = job.stage / "model.shared.onnx"
    export_onnx(model, tuple(job.loaded.info.input_shape), path)
    set_metadata(path, {"edgeprune.precision": "shared",
                        "edgeprune.shared_bits": str(cfg.shared_bits)})
    sizes = S.storage_sizes(state, shared)
    return {"file": path.name, "flavour": f"{2 ** cfg.shared_bits} shared values per layer "
            "+ Huffman", "runtime": "any (decoded float weights)",
            "tensorrt": "fp32/fp16 engine from this ONNX (decoded weights)",
            "deployment_note": DEPLOYMENT_NOTE,
            "packed": {"file": packed_path.name, "bytes": packed_bytes,
                       "format": "per shared tensor: float32 codebook + canonical Huffman "
                                 "code lengths + bit stream; other tensors raw"},
            "storage_bytes": {**sizes, "shared_huffman": packed_bytes},
            "compression_vs_fp32": sizes["fp32"] / packed_bytes,
            "layers": names, "shared_tensors": sorted(shared), "bits": cfg.shared_bits,
            "finetune": {"epochs": cfg.shared_epochs, "lr": cfg.shared_lr, "losses": losses,
                         "trained": "codebooks (gradients summed per cluster), biases, BN"},
            "accuracy_float": before_share, "accuracy_before_finetune": before,
            "accuracy_after_finetune": after, "accuracy": job.accuracy(path)}


def _check_round_trip(loaded: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> None:
    same = loaded.keys() == state.keys() and all(
        torch.equal(loaded[k], state[k]) for k in state)
    if not same:
        raise EdgepruneError("the packed shared-weight file does not load back exactly; "
                             "please report it")
