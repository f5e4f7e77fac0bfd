"""Importing the AnomalyCLIP authors' Lightning checkpoints, and exporting runs to them.

The checkpoints are built by :mod:`authors_fixtures` from the state-dict tables
(``tests/fixtures/authors/*.tsv``) with random weights, saved the way Lightning 1.8 saves them.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import pickletools
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from authors_fixtures import (
    CUDA_PICKLE,
    REFERENCE,
    TABLES,
    authors_token_ids,
    build_state_dict,
    openai_text_clip,
    openai_text_features,
    save_lightning,
    text_tower_tensors,
)
from safetensors.torch import load_file
from transformers import CLIPModel, CLIPTokenizer

from anomalyclip.cli import main
from anomalyclip.datasets import XD, get_dataset
from anomalyclip.errors import AnomalyError
from anomalyclip.interop.authors import (
    authors_to_state,
    check_prompt_tokens,
    export_checkpoint,
    import_checkpoint,
)
from anomalyclip.interop.authors_checkpoint import (
    infer_config,
    read_authors_checkpoint,
    text_layers,
)
from anomalyclip.interop.authors_keys import model_rules
from anomalyclip.interop.safe_pickle import Placeholder, load_torch_file
from anomalyclip.runs import build_network, load_model
from anomalyclip.runs.checkpoint import load_run
from anomalyclip.train.config import resolve_config
from anomalyclip.train.loop import make_optimizer

SKIPPED = ("net.image_encoder.", "net.selector_model.logit_scale", "net.prompt_learner.token_")
TEXT = "prompt_learner.text_encoder."


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return openai_text_clip(tmp_path_factory.mktemp("clip_openai_text"))


@pytest.fixture(scope="module")
def shared_text(clip_dir) -> dict[str, torch.Tensor]:
    return text_tower_tensors(seed=1)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, clip_dir, shared_text):
    out = tmp_path_factory.mktemp("ckpts")
    tokenizer = CLIPTokenizer.from_pretrained(clip_dir)
    made = {}
    for seed, dataset in enumerate(TABLES):
        sd = build_state_dict(dataset, shared_text, tokenizer, seed=10 + seed)
        save_lightning(out / f"{dataset}.ckpt", sd)
        centroid = torch.randn(512, generator=torch.Generator().manual_seed(seed))
        torch.save(centroid, out / f"{dataset}_ncentroid.pt", pickle_module=CUDA_PICKLE)
        made[dataset] = (out / f"{dataset}.ckpt", out / f"{dataset}_ncentroid.pt", sd, centroid)
    return made


@pytest.fixture(scope="module")
def imported(tmp_path_factory, checkpoints, clip_dir):
    out = tmp_path_factory.mktemp("runs")
    return {
        ds: import_checkpoint(ckpt, ds, out / ds, clip_dir, centroid=cen)
        for ds, (ckpt, cen, _, _) in checkpoints.items()
    }


# -------------------------------------------------------------------- the files are what they claim
@pytest.mark.slow
def test_checkpoint_is_cuda_tagged_and_refused_by_weights_only(checkpoints, tmp_path):
    ckpt = checkpoints["ucf"][0]
    with zipfile.ZipFile(ckpt) as zf:
        pkl = zf.read(next(n for n in zf.namelist() if n.endswith("/data.pkl")))
    strings = {arg for op, arg, _ in pickletools.genops(pkl) if isinstance(arg, str)}
    assert "cuda:0" in strings and "cpu" not in strings
    assert {"src.models.components.loss ComputeLoss", "omegaconf.dictconfig DictConfig"} <= strings
    assert "src" not in sys.modules and "omegaconf" not in sys.modules
    with pytest.raises(pickle.UnpicklingError, match="functools.partial"):
        torch.load(ckpt, map_location="cpu", weights_only=True)
    if not torch.cuda.is_available():  # and without map_location, the cuda:0 tag stops it
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(ckpt, weights_only=True)
    only_tensors = tmp_path / "t.pt"
    torch.save(OrderedDict(w=torch.ones(2)), only_tensors, pickle_module=CUDA_PICKLE)
    assert torch.equal(load_torch_file(only_tensors).obj["w"], torch.ones(2))


def test_safe_load_reads_everything_as_data(checkpoints):
    ckpt, _, sd, _ = checkpoints["xd"]
    loaded = load_torch_file(ckpt)
    assert loaded.locations == {"cuda:0"}
    obj = loaded.obj
    assert list(obj["state_dict"]) == list(sd)
    assert all(torch.equal(obj["state_dict"][k], v) for k, v in sd.items())
    assert all(v.device.type == "cpu" for v in obj["state_dict"].values())
    hp = obj["hyper_parameters"]
    assert isinstance(hp["loss"], Placeholder)
    assert hp["loss"].qualified_name == "src.models.components.loss.ComputeLoss"
    assert hp["optimizer"].qualified_name == "functools.partial"
    assert hp["optimizer"].state[2] == {"weight_decay": 0.2}
    assert hp["solver"].qualified_name == "omegaconf.dictconfig.DictConfig"
    assert hp["solver"].state["_content"]["lr"] == 1e-5
    assert obj["datamodule_hyper_parameters"]["tags"] == {"a", "b"}  # protocol 2 __builtin__ set
    assert (
        obj["callbacks"]["ModelCheckpoint{'monitor': 'test/AUC'}"]["kth_value"].item() == math.inf
    )
    assert "src" not in sys.modules and "omegaconf" not in sys.modules


# -------------------------------------------------------------------- key by key
def _expected_weights(sd: OrderedDict, depth: int) -> tuple[dict[str, torch.Tensor], set[str]]:
    """Our weights from the authors' (written from the reference's mapping table); sources."""
    want: dict[str, torch.Tensor] = {}
    sources: set[str] = set()
    for line in (REFERENCE / "openai_text_to_hf.tsv").read_text().splitlines()[1:]:
        src, dst, transform = line.split("\t")
        sources.add(src)
        dst = [TEXT + k for k in dst.split(",")]
        if transform.startswith("split"):
            n = sd[src].shape[0] // 3
            for i, k in enumerate(dst):  # rows [0, n) q, [n, 2n) k, [2n, 3n) v
                want[k] = sd[src][i * n : (i + 1) * n]
        elif transform.startswith("transpose"):
            want[dst[0]] = sd[src].T
        else:
            want[dst[0]] = sd[src]
    for key, value in sd.items():
        if key.startswith(
            ("net.temporal_model.", "net.selector_model.bn", "net.prompt_learner.ctx")
        ):
            sources.add(key)
        if key.startswith("net.temporal_model."):
            ours = key.removeprefix("net.")
            ours = ours.replace("axial_attn.pos_emb.param_0", "pos_emb_n")
            ours = ours.replace("axial_attn.pos_emb.param_1", "pos_emb_l")
            ours = ours.replace("axial_attn.layers.", "").replace(".net.fn.fn.", ".")
            want[ours.replace(".net.fn.norm.", ".norm.")] = value
        elif key.startswith(("net.selector_model.bn_layer.", "net.prompt_learner.ctx")):
            want[key.removeprefix("net.")] = value
    assert sum(k.startswith("temporal_model.blocks.") for k in want) == 24 * depth
    return want, sources


@pytest.mark.slow
@pytest.mark.parametrize("dataset", list(TABLES))
def test_import_maps_every_tensor(dataset, checkpoints, imported, clip_dir):
    _, _, sd, centroid = checkpoints[dataset]
    run = imported[dataset]
    cfg = json.loads((run / "config.json").read_text())
    depth = {"ucf": 1, "xd": 1, "sht": 2}[dataset]
    want, sources = _expected_weights(sd, depth)
    got = load_file(str(run / "model.safetensors"))
    assert set(got) == set(want) | {"centroid"}
    for key, value in want.items():
        assert got[key].dtype == value.dtype, key
        assert torch.equal(got[key], value), key
    assert torch.equal(got["centroid"], centroid)
    # every tensor of the checkpoint is checked above or one the model does not need
    assert sources == {k for k in sd if not k.startswith(SKIPPED)}
    # the shape read from the tensors is the paper's configuration
    spec = get_dataset(dataset)
    m = cfg["model"]
    assert (m["emb_dim"], m["depth"], m["concat_similarity"]) == {
        "ucf": (256, 1, False), "xd": (128, 1, False), "sht": (256, 2, True)
    }[dataset]  # fmt: skip
    assert (m["n_ctx"], m["num_segments"], m["seg_length"], m["heads"]) == (8, 32, 16, 8)
    assert tuple(m["classes"]) == spec.classes and m["normal_id"] == spec.normal_id
    assert cfg["imported"]["saved_on"] == ["cuda:0"] and cfg["imported"]["epoch"] == 49
    assert cfg["epoch"] == 50  # epochs completed
    # `anomaly train --resume` rebuilds the same configuration from the preset and the run
    assert m == resolve_config(dataset).model.with_data(spec.classes, spec.normal_id, 512).to_dict()
    state = load_run(run, with_optimizer=True)
    model, _ = load_model(run, clip_dir)
    make_optimizer(model, resolve_config(dataset)).load_state_dict(state.optimizer)


@pytest.mark.slow
def test_sht_input_projection_keeps_similarities_first(checkpoints, imported, clip_dir):
    """529 inputs = 17 similarities, then the 512 centred values: the model's own order."""
    _, _, sd, _ = checkpoints["sht"]
    model, _ = load_model(imported["sht"], clip_dir)
    x = torch.randn(1, 32, 16, 512, generator=torch.Generator().manual_seed(3))
    seen = {}

    class Stop(Exception):
        pass

    def capture(module, args, output):  # the temporal model's input, then skip the rest
        seen["input"], seen["output"] = args[0], output
        raise Stop

    def similarity(module, args, output):
        seen["similarity"] = output

    hooks = [
        model.temporal_model.projection.register_forward_hook(capture),
        model.selector_model.register_forward_hook(similarity),
    ]
    with torch.no_grad(), pytest.raises(Stop):
        model(x)
    for h in hooks:
        h.remove()
    sim = seen["similarity"]
    assert sim.shape == (1, 32, 16, 17)
    feats = seen["input"]  # (1, 32, 16, 529)
    assert torch.equal(feats[..., :17], sim) and torch.equal(feats[..., 17:], x - model.centroid)
    w = sd["net.temporal_model.projection.weight"]  # the authors' (256, 529), as saved
    b = sd["net.temporal_model.projection.bias"]
    torch.testing.assert_close(seen["output"], feats @ w.T + b, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_text_features_equal_openai_computation(checkpoints, imported, clip_dir):
    """XD-Violence's prompts (``Car_accident`` -> "Car accident") through the mapped tower."""
    _, _, sd, _ = checkpoints["xd"]
    model, _ = load_model(imported["xd"], clip_dir)
    ids = authors_token_ids(CLIPTokenizer.from_pretrained(clip_dir), model.cfg.classes)
    with torch.no_grad():
        ours = model.text_features().double()
    ref = openai_text_features(sd, ids)
    assert ref.abs().mean() > 0.3  # features of a real magnitude, not a vanishing signal
    assert (ours - ref).abs().max() < 1e-5
    # negative controls: both transforms matter far beyond the tolerance (one class, and only
    # the positions up to its EOS, which are all a causal model's EOS state depends on)
    one = ids[:1, : int(ids[0].argmax()) + 1]
    bad = OrderedDict(sd)
    bad["net.text_encoder.text_projection"] = sd["net.text_encoder.text_projection"].T
    assert (openai_text_features(bad, one) - ours[:1]).abs().max() > 1e-2
    w = sd["net.text_encoder.transformer.resblocks.0.attn.in_proj_weight"]
    bad = OrderedDict(sd)
    bad["net.text_encoder.transformer.resblocks.0.attn.in_proj_weight"] = torch.cat(
        [w[512:1024], w[:512], w[1024:]]
    )  # q and k swapped
    assert (openai_text_features(bad, one) - ours[:1]).abs().max() > 1e-2


# -------------------------------------------------------------------- round trip
@pytest.mark.slow
def test_export_import_round_trip_is_bit_exact(checkpoints, imported, clip_dir, tmp_path, capsys):
    _, _, sd, _ = checkpoints["sht"]
    run = imported["sht"]
    out = tmp_path / "export" / "last.ckpt"
    code, _ = _cli(capsys, "export-checkpoint", str(run), str(out))
    assert code == 0 and out.is_file() and out.with_name("ncentroid.pt").is_file()
    # our export is plain tensors and containers: torch's own safe loader takes it
    exported = torch.load(out, map_location="cpu", weights_only=True)
    assert exported["pytorch-lightning_version"] == "1.8.3"
    esd = exported["state_dict"]
    kept = [k for k in sd if not k.startswith(("net.image_encoder.", "net.selector_model.logit"))]
    assert [k for k in esd if k != "net.selector_model.logit_scale"] == kept  # names and order
    for k in kept:
        assert esd[k].dtype == sd[k].dtype and torch.equal(esd[k], sd[k]), k
    assert exported["datamodule_hyper_parameters"]["normal_id"] == 8
    again = tmp_path / "again"
    code, _ = _cli(
        capsys, "import-checkpoint", str(out), "--dataset", "sht", "--clip", str(clip_dir),
        "--centroid", str(out.with_name("ncentroid.pt")), "--out", str(again),
    )  # fmt: skip
    assert code == 0
    a = load_file(str(run / "model.safetensors"))
    b = load_file(str(again / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_imported_runs_are_marked_as_trained_on_the_authors_features(imported):
    from anomalyclip.runs import RunConfig
    from anomalyclip.runs.load import run_preprocessing

    for run in imported.values():  # so predict and watch make features the authors' way
        config = json.loads((run / "config.json").read_text())
        assert config["inputs"]["preprocessing"]["mode"] == "authors"
        assert run_preprocessing(RunConfig.read(run)) == "authors"


@pytest.mark.slow
def test_centroid_from_store_features(checkpoints, clip_dir, tmp_path):
    from anomalyclip.store import VideoRecord, open_store, provenance

    rng = torch.Generator().manual_seed(5)
    videos = {  # id -> (label, split, frames)
        "A__normal_1": ("Normal", "train", 40), "A__normal_2": ("Normal", "train", 23),
        "B1__fight": ("Fighting", "train", 30), "A__normal_test": ("Normal", "test", 50),
    }  # fmt: skip
    store = tmp_path / "xd.zarr"
    attrs = provenance(
        dataset="xd", classes=XD.classes, backbone={"model": str(clip_dir), "dim": 512},
        preprocessing={"size": 224}, sampling={"stride": 1}, dtype="float32",
    )  # fmt: skip
    feats = {}
    with open_store(store, "w") as st:
        st.init(attrs)
        for vid, (label, split, n) in videos.items():
            feats[vid] = torch.randn(n, 512, generator=rng)
            st.write_video(VideoRecord(vid, label=label, split=split, fps=24.0), feats[vid].numpy())
    normal = torch.cat([feats["A__normal_1"], feats["A__normal_2"]]).double()
    run = import_checkpoint(checkpoints["xd"][0], "xd", tmp_path / "r", clip_dir, features=store)
    got = load_file(str(run / "model.safetensors"))["centroid"]
    torch.testing.assert_close(got, normal.mean(0).float(), rtol=0, atol=1e-6)
    assert json.loads((run / "config.json").read_text())["store"]["location"] == str(store)


@pytest.mark.slow
def test_export_with_image_tower(imported, clip_dir, tmp_path):
    out = export_checkpoint(imported["xd"], tmp_path / "x.ckpt", clip=clip_dir)
    esd = torch.load(out, map_location="cpu", weights_only=True)["state_dict"]
    vision = CLIPModel.from_pretrained(clip_dir)
    vs = vision.state_dict()
    img = [k for k in esd if k.startswith("net.image_encoder.")]
    assert len(img) == 8 + 12 * 2  # embeddings, ln_pre/post, proj + 12 tensors per block
    assert torch.equal(esd["net.image_encoder.proj"], vs["visual_projection.weight"].T)
    w = esd["net.image_encoder.transformer.resblocks.1.attn.in_proj_weight"]
    assert torch.equal(w[64:128], vs["vision_model.encoder.layers.1.self_attn.k_proj.weight"])
    assert torch.equal(
        esd["net.image_encoder.conv1.weight"], vs["vision_model.embeddings.patch_embedding.weight"]
    )


# -------------------------------------------------------------------- safety
class _CreatesFile:
    """Unpickling this with a plain unpickler creates ``path`` (via builtins.open)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


class _RunsShell:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.slow
def test_malicious_reduce_never_runs(checkpoints, clip_dir, tmp_path):
    victim = tmp_path / "pwned"
    # the payload is live: a plain unpickler does create the file
    pickle.loads(pickle.dumps(_CreatesFile(victim), protocol=2)).close()
    assert victim.exists()
    victim.unlink()

    _, cen, sd, _ = checkpoints["xd"]
    evil = tmp_path / "evil.ckpt"
    save_lightning(evil, sd, {"hook": _CreatesFile(victim), "shell": _RunsShell(victim)})
    run = import_checkpoint(evil, "xd", tmp_path / "run", clip_dir, centroid=cen)
    assert not victim.exists()
    assert (run / "model.safetensors").is_file()
    hp = load_torch_file(evil).obj["hyper_parameters"]
    assert hp["hook"].qualified_name in ("builtins.open", "__builtin__.open", "io.open")
    assert hp["hook"].args == (str(victim), "w")
    assert hp["shell"].qualified_name in ("posix.system", "os.system", "nt.system")
    assert not victim.exists()


def _archive(path: Path, pkl: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/byteorder", "little")
    return path


def test_modules_named_in_the_file_are_never_imported(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "sneaky_side_effect_mod.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nclass Thing:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    # GLOBAL sneaky_side_effect_mod.Thing, EMPTY_TUPLE, NEWOBJ, then BUILD with {"a": 1}
    pkl = b"\x80\x02csneaky_side_effect_mod\nThing\n)\x81}X\x01\x00\x00\x00aK\x01sb."
    obj = load_torch_file(_archive(tmp_path / "s.pt", pkl)).obj
    assert isinstance(obj, Placeholder) and obj.state == {"a": 1}
    assert obj.qualified_name == "sneaky_side_effect_mod.Thing"
    assert "sneaky_side_effect_mod" not in sys.modules and not marker.exists()
    # control: a plain unpickler imports it (and so runs its code)
    try:
        pickle.loads(pkl)
        assert marker.exists()
    finally:
        sys.modules.pop("sneaky_side_effect_mod", None)


def test_extension_codes_go_through_the_same_gate(tmp_path):
    import copyreg

    copyreg.add_extension("posix", "system", 0xF1)
    try:
        pkl = pickle.dumps(os.system, protocol=2)  # an EXT1 opcode, no module name in the file
        assert b"system" not in pkl
        obj = load_torch_file(_archive(tmp_path / "e.pt", pkl)).obj
    finally:
        copyreg.remove_extension("posix", "system", 0xF1)
    assert issubclass(obj, Placeholder) and obj.qualified_name == "posix.system"


# -------------------------------------------------------------------- errors
def _cli(capsys, *args: str) -> tuple[int, str]:
    argv = sys.argv
    sys.argv = ["anomaly", *args]
    try:
        with pytest.raises(SystemExit) as exc:
            main()
    finally:
        sys.argv = argv
    return exc.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "content",
    [b"not a checkpoint at all\n", b"PK\x03\x04truncated", b""],
    ids=["text", "broken-zip", "empty"],
)
def test_not_a_checkpoint_is_one_line_error(content, tmp_path, capsys, clip_dir):
    bad = tmp_path / "last.ckpt"
    bad.write_bytes(content)
    code, err = _cli(
        capsys, "import-checkpoint", str(bad), "--dataset", "ucf", "--centroid", str(bad),
        "--clip", str(clip_dir), "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and str(bad) in err
    assert not (tmp_path / "run").exists()


def test_bad_archives_are_refused(tmp_path):
    no_pkl = tmp_path / "a.zip"
    with zipfile.ZipFile(no_pkl, "w") as zf:
        zf.writestr("x/readme.txt", "hi")
    with pytest.raises(AnomalyError, match="without data.pkl"):
        load_torch_file(no_pkl)
    plain = tmp_path / "tensor.pt"
    torch.save(torch.ones(3), plain)
    with pytest.raises(AnomalyError, match="no state_dict"):
        read_authors_checkpoint(plain)
    # a storage record shorter than the tensor it backs
    short = tmp_path / "short.pt"
    torch.save({"state_dict": {"net.w": torch.ones(4)}}, short)
    with zipfile.ZipFile(short) as src, zipfile.ZipFile(tmp_path / "s2.pt", "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info.filename, data[:4] if "/data/" in info.filename else data)
    with pytest.raises(AnomalyError, match="wrong size"):
        load_torch_file(tmp_path / "s2.pt")


@pytest.mark.slow
def test_missing_or_misshaped_key_is_named(checkpoints, clip_dir):
    ck = read_authors_checkpoint(checkpoints["ucf"][0])
    spec = get_dataset("ucf")
    mcfg, _ = infer_config(ck, spec)
    model = build_network(mcfg, clip_dir)
    rules = model_rules(mcfg, text_layers(ck))
    key = "temporal_model.axial_attn.layers.blocks.1.g.net.3.weight"
    saved = ck.state.pop(key)
    with pytest.raises(AnomalyError, match=rf"key net\.{key} is missing"):
        authors_to_state(ck, rules, model, str(clip_dir))
    ck.state[key] = saved
    # the stored prompt buffers must be what our tokenizer gives, up to EOS (not the padding)
    model.load_state_dict(authors_to_state(ck, rules, model, str(clip_dir)), strict=False)
    check_prompt_tokens(ck, model, str(clip_dir))
    suffix = ck.state["prompt_learner.token_suffix"]
    eos = int(model.prompt_learner.eos_position[3])  # class 3 = Assault
    suffix[3, eos - 9 + 1] += 1  # first padding position after EOS: ignored
    check_prompt_tokens(ck, model, str(clip_dir))
    suffix[3, eos - 9 - 1] += 1  # the full stop before EOS
    with pytest.raises(AnomalyError, match="token_suffix differs .* class 'Assault'"):
        check_prompt_tokens(ck, model, str(clip_dir))
    key = "text_encoder.transformer.resblocks.3.attn.in_proj_weight"
    ck.state[key] = ck.state[key][:1000]
    with pytest.raises(
        AnomalyError, match=rf"key net\.{key} has shape 1000x512, expected 1536x512"
    ):
        authors_to_state(ck, rules, model, str(clip_dir))
    # hyper-parameters checked against the dataset
    with pytest.raises(AnomalyError, match="has 14 classes, dataset 'xd' has 7"):
        infer_config(ck, get_dataset("xd"))
    ck.normal_id = 3
    with pytest.raises(AnomalyError, match="normal_id is 3"):
        infer_config(ck, spec)


@pytest.mark.slow
def test_centroid_is_required(checkpoints, clip_dir, tmp_path):
    with pytest.raises(AnomalyError, match="--centroid ncentroid.pt or --features"):
        import_checkpoint(checkpoints["xd"][0], "xd", tmp_path / "r", clip_dir)
    with pytest.raises(AnomalyError, match="expected a centroid tensor of shape 512"):
        import_checkpoint(
            checkpoints["xd"][0], "xd", tmp_path / "r", clip_dir, centroid=checkpoints["xd"][0]
        )
