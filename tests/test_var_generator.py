"""VARGenerator and its registered entries: the Generator contract at a tiny random size, the
released files and their local-path options, the `var` family's recipes, and sft / cca / va-pi
fine-tuning it through the shared training kit."""
import pytest

from vapi_bench import leaderboard as lb
import torch

import vapi_bench
from vapi_bench.errors import CheckpointError, OfflineError
from vapi_bench.interfaces import SamplingRecipe
from vapi_bench.plugins.var import VARGenerator
from vapi_bench.registry import get_registry
from vapi_bench.testing import check_generator, check_method
from vapi_bench.training.recipes import resolve_method_params

from helpers_toy_generator import RandomImages

#: a 2-block VAR over 4 scales (30 tokens) and a one-downsampling VQ-VAE: 8 px images
TINY = dict(depth=2, embed_dim=64, num_heads=4, num_classes=4, vocab_size=64, z_channels=8, vae_ch=32,
            vae_ch_mult=(1, 2), vae_num_res_blocks=1, patch_nums=(1, 2, 3, 4))
SMALL = dict(lr=1e-3, steps=2, batch_size=4, micro_batch=2, ckpt_every=1, precision="fp32")


def tiny(name: str = "var-d16", **kw) -> VARGenerator:
    return vapi_bench.load_generator(name, random_init=True, **{**TINY, **kw})


def test_all_sizes_are_registered_with_official_defaults():
    registry = get_registry()
    for depth in (16, 20, 24, 30):
        entry = registry.get("generators", f"var-d{depth}")
        p = {x.name: x.default for x in entry.params}
        assert (p["depth"], p["embed_dim"], p["num_heads"]) == (depth, 64 * depth, depth)
        assert p["drop_path_rate"] == pytest.approx(0.1 * depth / 24)
        assert p["patch_nums"] == (1, 2, 3, 4, 5, 6, 8, 10, 13, 16) and p["vocab_size"] == 4096
        assert (p["vae_ch"], p["z_channels"], p["share_quant_resi"]) == (160, 32, 4)
        var_file, vae_file = entry.requirements(checkpoint=None, **p)
        assert var_file.url == f"hf://FoundationVision/var/var_d{depth}.pth"
        assert vae_file.url == "hf://FoundationVision/var/vae_ch160v4096z32.pth"
        local = entry.requirements(checkpoint="/data/mine.pth", **{**p, "vae_checkpoint": "/data/vae.pth"})
        assert [str(r.location()) for r in local] == ["/data/mine.pth", "/data/vae.pth"]
        assert entry.requirements(checkpoint=None, **{**p, "random_init": True}) == []


def test_tiny_generator_keeps_the_contract():
    gen = tiny()
    assert (gen.num_tokens, gen.codebook_size, gen.image_size, gen.family) == (30, 64, 8, "var")
    assert gen.default_recipe == SamplingRecipe(cfg_scale=2.5, top_k=900, top_p=0.96)
    check_generator(gen, plugin="var")


def test_random_init_is_seeded_and_official():
    a, b, c = tiny(init_seed=1), tiny(init_seed=1), tiny(init_seed=2)
    sa, sb, sc = a.policy.state_dict(), b.policy.state_dict(), c.policy.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["class_emb.weight"], sc["class_emb.weight"])
    # build_vae_var's init (var.py:236-286): zero head bias, adaLN gates scaled by 1e-5
    assert float(sa["head.bias"].abs().max()) == 0.0
    assert float(sa["blocks.0.ada_lin.1.weight"][: 2 * 64].abs().max()) < 1e-5


def test_released_weights_missing_offline_is_a_clear_error(monkeypatch, tmp_path, cli):
    monkeypatch.setenv("VAPI_BENCH_OFFLINE", "1")
    monkeypatch.setenv("VAPI_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(OfflineError, match="var_d16.pth"):
        vapi_bench.load_generator("var-d16")
    code, text = cli("run", "-m", "var-d16", "-a", "cca", "-t", "imagenet-fid")
    assert code != 0 and "var_d16.pth" in text and "offline" in text
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1


def test_loads_released_format_files_from_local_paths(tmp_path):
    """The release is a plain state dict per file (demo_sample.ipynb loads them with strict=True)."""
    source = tiny(init_seed=5)
    var_file, vae_file = tmp_path / "var_tiny.pth", tmp_path / "vae_tiny.pth"
    state = source.policy.state_dict()
    state["attn_bias_for_masking"] = torch.where(state["attn_bias_for_masking"] < 0, -torch.inf, 0.0)  # as released
    torch.save(state, var_file)
    torch.save(source.vae.state_dict(), vae_file)
    loaded = vapi_bench.load_generator("var-d16", checkpoint=str(var_file), vae_checkpoint=str(vae_file), **TINY)
    recipe = SamplingRecipe(cfg_scale=2.5, top_k=10, top_p=0.9)
    assert torch.equal(source.sample([1, 2], seeds=[0, 1], recipe=recipe), loaded.sample([1, 2], seeds=[0, 1], recipe=recipe))
    assert len(loaded.describe()["vae_checkpoint_sha256"]) == 64
    assert bool(torch.isfinite(loaded.policy.attn_bias_for_masking).all())  # the suite's finite-weights checks hold
    with pytest.raises(CheckpointError, match=r"class_emb.weight: checkpoint \(5, 64\) vs model \(9, 64\)"):
        vapi_bench.load_generator("var-d16", checkpoint=str(var_file), vae_checkpoint=str(vae_file),
                                  **{**TINY, "num_classes": 8})


def test_family_recipes_resolve_for_every_method():
    gen = tiny()
    cca = resolve_method_params("cca", {}, gen)
    assert (cca["lr"], cca["weight_decay"], cca["batch_size"], cca["micro_batch"], cca["steps"]) == (
        2e-5, 0.05, 256, 8, 5000)
    from vapi_bench.plugins.peers.recipes import CCA_LAMBDA
    assert [CCA_LAMBDA[f"var-d{d}"] for d in (16, 20, 24, 30)] == [50.0, 50.0, 100.0, 1000.0]
    vapi = resolve_method_params("va-pi", {}, gen)
    assert (vapi["xi"], vapi["lr"], vapi["batch_size"], vapi["group_size"], vapi["beta"]) == (0.0, 1e-6, 128, 8, 0.1)
    assert resolve_method_params("sft", {}, gen)["lr"] == 1e-6


@pytest.mark.parametrize("method,extra", [("sft", {}), ("cca", {}),
                                          ("va-pi", {"group_size": 2, "w_perceptual": 0.0, "xi": 0.5})])
def test_methods_fine_tune_it_through_the_shared_kit(method, extra):
    """Nothing VAR-specific in the methods: CE on the multi-scale tokens (sft), sequence likelihoods
    under c and c⁻ with null rows (cca), teacher-forced sampling of every scale decoded and rewarded
    in pixels (va-pi, with a corrupted context)."""
    summary = check_method(vapi_bench.load_method(method, **SMALL, **extra), tiny, RandomImages(size=8, num_classes=4),
                           plugin="var", name=method)
    assert summary["steps"] == 2


def test_cli_runs_a_tiny_random_var_through_fine_tuning_sampling_and_scoring(cli, tmp_path):
    """The whole loop on the shapes world (24 classes, 32 px) with a random tiny VAR: the runner's
    stages need nothing VAR-specific either."""
    tiny_shapes = {**TINY, "num_classes": 24, "vae_ch_mult": "1,1,2", "patch_nums": "1,2,3,4,6,8"}
    sets = [item for k, v in {**tiny_shapes, "random_init": "true", "dataset": "shapes-c2i", "steps": 1,
                              "method.batch_size": 2, "micro_batch": 2}.items()
            for item in ("--set", f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}")]
    code, text = cli("run", "-m", "var-d16", "-a", "sft", "-t", "shapes-fid", "--limit", "4", *sets)
    assert code == 0, text
    board = lb.load(tmp_path / "res", "shapes-fid")
    assert set(board["model"]) == {"var-d16"} and sorted(board["variant"]) == ["cfg", "no-cfg"]
    assert "var-d16 on shapes-fid" in text  # the run's own table
