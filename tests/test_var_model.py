"""VAR plugin against a transcription of the official code (tests/var_reference.py, VAR @ 78b9539):
state-dict layout of the released sizes, teacher-forced logits, multi-scale VQ encode / decode,
greedy cached sampling with the guidance ramp, top-k / top-p filtering; plus block causality."""
import dataclasses

import pytest
import torch

from vapi_bench.interfaces import SamplingRecipe
from vapi_bench.plugins.var.generator import VARGenerator
from vapi_bench.plugins.var.model import VAR, VARConfig
from vapi_bench.plugins.var.sampling import filter_logits, guidance_at
from vapi_bench.plugins.var.vqvae import VQVAE, VQVAEConfig

import var_reference as ref

PATCH_NUMS = (1, 2, 3, 4)
TINY = dict(V=64, Cvae=8, ch=32, num_classes=10, depth=2)
#: fp32, the same operations in the same order and memory layouts: logits and decoded pixels are
#: bit-identical to the official code's; the official sampler returns (x + 1) / 2, which we map
#: back with 2 y - 1, costing one rounding step
LOGIT_ATOL = 0.0
PIXEL_ATOL = 0.0
SAMPLED_PIXEL_ATOL = 1e-6


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("depth", [16, 20, 24, 30])
def test_released_sizes_have_the_official_keys_and_shapes(depth, monkeypatch):
    # the official module reads tensors at construction (meta tensors cannot), so it is built on the
    # CPU with build_vae_var's own trick of skipping the default initialisation (models/__init__.py:23-25):
    # its big weights stay untouched torch.empty memory
    for cls in (torch.nn.Linear, torch.nn.Conv2d, torch.nn.GroupNorm):
        monkeypatch.setattr(cls, "reset_parameters", lambda self: None)
    vae_ref, var_ref = ref.build_vae_var(depth=depth)
    with torch.device("meta"):
        ours = VAR(VARConfig.for_depth(depth))
    assert shapes(ours) == shapes(var_ref)
    if depth == 16:
        with torch.device("meta"):
            vae = VQVAE(VQVAEConfig())
        assert shapes(vae) == shapes(vae_ref)
        assert len(vae.state_dict()) == len(vae_ref.state_dict())


def test_released_parameter_counts_match_the_readme():
    """VAR README table (transformer only), at its rounding: 310M / 600M / 1.0B / 2.0B."""
    readme = {16: (1e6, -1, 310), 20: (1e6, -1, 600), 24: (1e9, 1, 1.0), 30: (1e9, 1, 2.0)}
    for depth, (unit, digits, value) in readme.items():
        with torch.device("meta"):
            n = sum(p.numel() for p in VAR(VARConfig.for_depth(depth)).parameters())
        assert round(n / unit, digits) == value, (depth, n)


def tiny_pair(share_quant_resi: int = 4, seed: int = 0):
    """Our VAR + VQ-VAE with informative random weights, and the official modules holding the very
    same state dicts (loaded strictly: the key sets must agree)."""
    torch.manual_seed(seed)
    vae = VQVAE(VQVAEConfig(vocab_size=TINY["V"], z_channels=TINY["Cvae"], ch=TINY["ch"],
                            share_quant_resi=share_quant_resi, patch_nums=PATCH_NUMS)).eval()
    var = VAR(VARConfig(depth=2, embed_dim=64, num_heads=4, num_classes=TINY["num_classes"], vocab_size=TINY["V"],
                        z_channels=TINY["Cvae"], patch_nums=PATCH_NUMS, drop_path_rate=0.0)).eval()
    with torch.no_grad():
        vae.quantize.embedding.weight.mul_(0.1)  # codes on the encoder's scale: varied nearest codes
        for name, p in var.named_parameters():
            if name.endswith("scale_mul_1H11"):
                continue
            torch.nn.init.trunc_normal_(p, std=0.1)  # official init gates blocks at 1e-5: too quiet to test
    vae_ref, var_ref = ref.build_vae_var(patch_nums=PATCH_NUMS, share_quant_resi=share_quant_resi,
                                         embed_dim=64, num_heads=4, drop_path_rate=0.0, cond_drop_rate=0.0, **TINY)
    vae_ref.load_state_dict(vae.state_dict(), strict=True)
    var_ref.load_state_dict(var.state_dict(), strict=True)
    generator = VARGenerator(var, vae, name="var-tiny")
    return generator, vae_ref.eval(), var_ref.eval()


def images(n: int = 3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 64, 64, generator=g) * 2 - 1


@pytest.mark.parametrize("share", [4, 3])  # K = 4 and K != 4 use different φ ticks (quant.py:223)
def test_encode_and_decode_match_official(share):
    gen, vae_ref, _ = tiny_pair(share)
    x = images()
    tokens = gen.encode(x)
    with torch.no_grad():
        official = vae_ref.img_to_idxBl(x)
    assert torch.equal(tokens, torch.cat(official, dim=1))
    assert len(tokens.unique()) > 10  # a meaningful comparison: many different codes were chosen
    with torch.no_grad():
        ours = gen.decode(tokens)
        theirs = vae_ref.idxBl_to_img(official, same_shape=True, last_one=True)
    assert ours.shape == (3, 3, 64, 64)
    torch.testing.assert_close(ours.clamp(-1, 1), theirs, atol=PIXEL_ATOL, rtol=0)
    # decode_embeddings reads the same code vectors
    torch.testing.assert_close(gen.decode_embeddings(gen.codebook[tokens]), ours, atol=1e-6, rtol=0)


def test_teacher_forced_logits_match_official():
    gen, vae_ref, var_ref = tiny_pair()
    x, labels = images(), torch.tensor([0, 3, 9])
    tokens = gen.encode(x)
    with torch.no_grad():
        ours = gen.teacher_forced_logits(tokens, gen.prepare_conditions([0, 3, 9]))
        idx = vae_ref.img_to_idxBl(x)
        theirs = var_ref(labels, vae_ref.quantize.idxBl_to_var_input(idx))
    assert ours.shape == (3, gen.num_tokens, TINY["V"]) and gen.num_tokens == 30
    assert theirs.std() > 0.3  # informative logits
    torch.testing.assert_close(ours, theirs, atol=LOGIT_ATOL, rtol=0)
    # the null class
    null = gen.null_conditions(gen.prepare_conditions([0, 3, 9]), torch.tensor([False, True, False]))
    with torch.no_grad():
        ours_null = gen.teacher_forced_logits(tokens, null)
        theirs_null = var_ref(torch.tensor([0, 10, 9]), vae_ref.quantize.idxBl_to_var_input(idx))
    torch.testing.assert_close(ours_null, theirs_null, atol=LOGIT_ATOL, rtol=0)


@pytest.mark.parametrize("var_cfg", [1.5, 0.0, 4.0])
def test_greedy_sampling_matches_official(var_cfg):
    """top_k=1 takes each scale's argmax, so the official sampler is deterministic too; VAR's cfg is
    the suite's cfg_scale - 1 (guidance ramped over scales)."""
    gen, _, var_ref = tiny_pair()
    labels = [1, 4, 7, 7]
    tokens = gen.sample(labels, seeds=[0, 1, 2, 3], recipe=SamplingRecipe(cfg_scale=1 + var_cfg, top_k=1))
    image, idx = var_ref.autoregressive_infer_cfg(B=4, label_B=torch.tensor(labels), cfg=var_cfg, top_k=1)
    assert torch.equal(tokens, torch.cat(idx, dim=1))
    assert len(tokens.unique()) > 5
    with torch.no_grad():
        torch.testing.assert_close(gen.decode(tokens).clamp(-1, 1), image * 2 - 1, atol=SAMPLED_PIXEL_ATOL, rtol=0)


def test_guidance_changes_greedy_samples_and_ramps():
    gen, _, _ = tiny_pair()
    plain = gen.sample([1, 4], seeds=[0, 1], recipe=SamplingRecipe(cfg_scale=1.0, top_k=1))
    guided = gen.sample([1, 4], seeds=[0, 1], recipe=SamplingRecipe(cfg_scale=5.0, top_k=1))
    assert torch.equal(plain[:, :1], guided[:, :1])  # the first scale is never guided (ratio 0)
    assert not torch.equal(plain, guided)
    assert guidance_at(2.5, 0, 10) == 0.0 and guidance_at(2.5, 9, 10) == pytest.approx(1.5)


@pytest.mark.parametrize("top_k,top_p", [(10, 1.0), (0, 0.8), (12, 0.6), (1, 0.96)])
def test_filtering_matches_official(top_k, top_p):
    logits = torch.randn(2, 5, 50, generator=torch.Generator().manual_seed(3)) * 2
    theirs = logits.clone()  # the official helper filters in place before drawing
    ref.sample_with_top_k_top_p_(theirs, top_k=top_k, top_p=0.0 if top_p == 1.0 else top_p,
                                 rng=torch.Generator().manual_seed(0))
    assert torch.equal(filter_logits(logits, top_k, top_p), theirs)


def test_teacher_forcing_is_block_causal_over_scales():
    """Changing scale 2's tokens changes no logit of scales 0-2 and some of scale 3; a context
    replaces the prefix the logits are computed from."""
    gen, _, _ = tiny_pair()
    tokens = gen.encode(images(2))
    cond = gen.prepare_conditions([2, 5])
    changed = tokens.clone()
    changed[:, 5:14] = (changed[:, 5:14] + 1) % TINY["V"]  # scale 2 = tokens [5, 14)
    with torch.no_grad():
        base = gen.teacher_forced_logits(tokens, cond)
        other = gen.teacher_forced_logits(changed, cond)
        via_context = gen.teacher_forced_logits(tokens, cond, context=changed)
    assert torch.equal(base[:, :14], other[:, :14])
    assert not torch.allclose(base[:, 14:], other[:, 14:])
    assert torch.equal(via_context, other)


def test_train_mode_drops_conditions_to_the_null_class():
    gen, _, _ = tiny_pair()
    tokens = gen.encode(images(2))
    cond = gen.prepare_conditions([2, 5])
    policy = gen.policy
    policy.config = dataclasses.replace(policy.config, cond_drop_rate=1.0)
    with torch.no_grad():
        dropped = gen.teacher_forced_logits(tokens, cond)  # eval mode: no dropout
        assert torch.equal(dropped, gen.teacher_forced_logits(tokens, cond))
        policy.train()
        dropped = gen.teacher_forced_logits(tokens, cond)
        policy.eval()
        null = gen.teacher_forced_logits(tokens, gen.null_conditions(cond))
    torch.testing.assert_close(dropped, null, atol=1e-6, rtol=0)


@pytest.mark.parametrize("share", [4, 3])
def test_training_forward_matches_official_loss_and_gradients(share):
    """vae_training.quantize_for_training against quant.py:52-104: the same codes, the same
    straight-through f̂ and VQ loss, and the same gradients into the encoder output, the codebook
    and the φ refiners (the commitment term reaches f, the codebook term the codes and φ)."""
    from vapi_bench.plugins.var.vae_training import quantize_for_training

    gen, vae_ref, _ = tiny_pair(share)
    ours, theirs = gen.vae.quantize, vae_ref.quantize
    f = torch.randn(3, TINY["Cvae"], 4, 4, generator=torch.Generator().manual_seed(2)) * 0.1
    f_ours, f_ref = f.clone().requires_grad_(True), f.clone().requires_grad_(True)
    with torch.enable_grad():
        for module in (ours, theirs):
            module.requires_grad_(True)
        out = quantize_for_training(ours, f_ours)
        f_hat_ref, loss_ref = theirs(f_ref)
        target = torch.randn_like(f)  # a downstream loss on f̂ reaches f straight through
        (out.vq_loss + (out.f_hat * target).sum()).backward()
        (loss_ref + (f_hat_ref * target).sum()).backward()
    assert torch.equal(torch.cat(out.indices, 1), torch.cat(theirs.f_to_idxBl_or_fhat(f, to_fhat=False), 1))
    assert torch.allclose(out.f_hat, f_hat_ref, atol=1e-6) and torch.allclose(out.vq_loss, loss_ref, atol=1e-7)
    assert float(out.vq_loss.detach()) > 0
    assert torch.allclose(f_ours.grad, f_ref.grad, atol=1e-6)
    grads = {name: p.grad for name, p in theirs.named_parameters()}
    for name, p in ours.named_parameters():
        assert torch.allclose(p.grad, grads[name], atol=1e-6), name
    assert float(ours.embedding.weight.grad.abs().sum()) > 0  # the codebook term trains the used codes
