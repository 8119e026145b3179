"""LlamaGen GPT and VQ: sizes, exact state-dict layout, RoPE, numerics, cache-vs-teacher-forcing."""
import math

import pytest
import torch
import torch.nn.functional as F

from vapi_bench.plugins.llamagen.gpt import GPT, GPT_CONFIGS, GPTConfig, RMSNorm
from vapi_bench.plugins.llamagen.rope import apply_rope, rope_table_2d
from vapi_bench.plugins.llamagen.vq import VQ_CONFIGS, VQConfig, VQModel, from_janus_keys, to_janus_keys

V = 16384


def tiny_c2i(**kw) -> GPTConfig:
    base = dict(dim=64, n_layer=2, n_head=4, vocab_size=V, num_classes=10, block_size=256)
    return GPTConfig(**{**base, **kw})


def tiny_t2i(**kw) -> GPTConfig:
    base = dict(dim=64, n_layer=2, n_head=4, vocab_size=V, model_type="t2i", cls_token_num=120, caption_dim=32, block_size=256)
    return GPTConfig(**{**base, **kw})


def small_gpt(cfg: GPTConfig, seed: int = 0) -> GPT:
    """A GPT with a non-zero head so logits carry information."""
    torch.manual_seed(seed)
    model = GPT(cfg)
    torch.nn.init.normal_(model.output.weight, std=0.05)
    return model.eval()


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---- sizes ---------------------------------------------------------------------------------

def analytic_params(n_layer, n_head, dim, vocab=V, classes=1000):
    """Independent count: embeddings + head + class table + per-layer attention, SwiGLU, norms."""
    hidden = int(8 * dim / 3)
    hidden = hidden if hidden % 256 == 0 else hidden + 256 - hidden % 256
    per_layer = 4 * dim * dim + 3 * dim * hidden + 2 * dim
    return 2 * vocab * dim + (classes + 1) * dim + n_layer * per_layer + dim


# reference table (docs/reference/llamagen-janus.md, Part A section 1), in millions
REFERENCE_M = {"GPT-B": 110.9, "GPT-L": 342.9, "GPT-XL": 774.7, "GPT-XXL": 1411.0, "GPT-3B": 3096.7,
               "GPT-XXXL": 3893.0, "GPT-1B": 1199.6, "GPT-7B": 6614.6}


@pytest.mark.parametrize("name", sorted(GPT_CONFIGS))
def test_parameter_counts_match_reference_on_meta_device(name):
    with torch.device("meta"):
        model = GPT(GPTConfig(**GPT_CONFIGS[name]))
    count = n_params(model)
    assert count == analytic_params(**GPT_CONFIGS[name])
    assert round(count / 1e6, 1) == pytest.approx(REFERENCE_M[name], abs=0.051)


def test_gpt_b_exact_and_t2i_xl_and_vq_counts():
    with torch.device("meta"):
        assert n_params(GPT(GPTConfig(**GPT_CONFIGS["GPT-B"]))) == 110_888_448
        t2i = GPT(GPTConfig(**GPT_CONFIGS["GPT-XL"], model_type="t2i", cls_token_num=120))
        vq16, vq8 = VQModel(VQ_CONFIGS["VQ-16"]), VQModel(VQ_CONFIGS["VQ-8"])
    assert round(n_params(t2i) / 1e6, 1) == 777.7
    assert round(n_params(vq16) / 1e6, 2) == 71.88
    assert round(n_params(vq16.encoder) / 1e6, 1) == 29.3 and round(n_params(vq16.decoder) / 1e6, 1) == 42.4
    assert round(n_params(vq8) / 1e6, 1) == 70.1
    assert len(vq16.state_dict()) == 344


def test_swiglu_hidden_rounding():
    assert tiny_c2i().ffn_hidden == 256
    assert GPTConfig(**GPT_CONFIGS["GPT-XL"]).ffn_hidden == 3584
    assert GPTConfig(**GPT_CONFIGS["GPT-3B"]).ffn_hidden == 8704
    assert GPTConfig(**GPT_CONFIGS["GPT-7B"]).ffn_hidden == 11008


# ---- state dict ----------------------------------------------------------------------------

TINY_C2I_KEYS = {
    "cls_embedding.embedding_table.weight": (11, 64),
    "tok_embeddings.weight": (V, 64),
    "norm.weight": (64,),
    "output.weight": (V, 64),
    **{
        f"layers.{i}.{k}": s
        for i in range(2)
        for k, s in {
            "attention.wqkv.weight": (192, 64),
            "attention.wo.weight": (64, 64),
            "feed_forward.w1.weight": (256, 64),
            "feed_forward.w3.weight": (256, 64),
            "feed_forward.w2.weight": (64, 256),
            "attention_norm.weight": (64,),
            "ffn_norm.weight": (64,),
        }.items()
    },
}


def test_tiny_c2i_state_dict_keys_and_shapes_exact():
    state = GPT(tiny_c2i()).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == TINY_C2I_KEYS
    assert len(state) == 18
    assert round(n_params(GPT(tiny_c2i())) / 1e6, 2) == 2.23


def test_tiny_t2i_state_dict_replaces_class_table():
    model = GPT(tiny_t2i())
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = {k: s for k, s in TINY_C2I_KEYS.items() if not k.startswith("cls_embedding")}
    expected.update({
        "cls_embedding.uncond_embedding": (120, 32),
        "cls_embedding.cap_proj.fc1.weight": (64, 32),
        "cls_embedding.cap_proj.fc2.weight": (64, 64),
    })
    assert shapes == expected
    # a persistent buffer, not a trainable parameter
    assert "cls_embedding.uncond_embedding" not in dict(model.named_parameters())


def test_no_null_row_without_class_dropout_like_official():
    model = GPT(tiny_c2i(class_dropout_prob=0.0))
    assert model.cls_embedding.embedding_table.weight.shape == (10, 64)
    with pytest.raises(ValueError, match="no null class"):
        model.null_condition(torch.tensor([1]))


def test_initialisation_zero_head_and_std():
    torch.manual_seed(0)
    model = GPT(tiny_c2i())
    assert torch.count_nonzero(model.output.weight) == 0
    assert model.tok_embeddings.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.layers[0].attention.wqkv.weight.std().item() == pytest.approx(0.02, rel=0.1)
    labels, context = torch.tensor([1, 2]), torch.randint(0, V, (2, 256))
    logits = model.train()(labels, context)
    loss = F.cross_entropy(logits.reshape(-1, V), context.reshape(-1))
    assert loss.item() == pytest.approx(math.log(V), abs=1e-4)


def test_config_validation_messages():
    with pytest.raises(ValueError, match="perfect square"):
        GPTConfig(block_size=250)
    with pytest.raises(ValueError, match="divisible by 4"):
        GPTConfig(dim=72, n_head=12)
    with pytest.raises(ValueError, match="one class token"):
        GPTConfig(cls_token_num=2)


# ---- RoPE ----------------------------------------------------------------------------------

def reference_angles(grid: int, head_dim: int, base: float, cls: int) -> torch.Tensor:
    """Angle of complex pair p for each position, written from the layout description (fp64)."""
    quarter = head_dim // 4
    rows = []
    for _ in range(cls):
        rows.append([None] * (head_dim // 2))
    for k in range(grid * grid):
        r, c = divmod(k, grid)
        row = []
        for p in range(head_dim // 2):
            axis_pos, i = (r, p) if p < quarter else (c, p - quarter)
            row.append(axis_pos / base ** (2 * i / (head_dim / 2)))
        rows.append(row)
    return rows


def test_rope_table_layout_against_independent_formula():
    grid, head_dim, cls = 4, 16, 3
    table = rope_table_2d(grid, head_dim, 10000.0, cls)
    assert table.shape == (cls + grid * grid, head_dim // 2, 2)
    assert table[:cls].abs().sum() == 0  # condition positions are zero rows, not identity
    angles = reference_angles(grid, head_dim, 10000.0, cls)
    for pos in range(cls, cls + grid * grid):
        want = torch.tensor([[math.cos(a), math.sin(a)] for a in angles[pos]], dtype=torch.float32)
        torch.testing.assert_close(table[pos], want, atol=1e-6, rtol=0)
    assert table[cls, 0].tolist() == [1.0, 0.0]


def test_rope_head_dim_100_has_25_frequencies_per_axis():
    table = rope_table_2d(2, 100, 10000.0, 1)
    assert table.shape == (5, 50, 2)
    # token (1, 0): row-axis pairs rotate, column-axis pairs do not
    assert torch.all(table[1 + 2, 25:, 0] == 1) and torch.all(table[1 + 2, :25, 1] != 0)


def test_apply_rope_is_interleaved_complex_multiplication():
    torch.manual_seed(0)
    grid, head_dim, cls = 3, 8, 1
    table = rope_table_2d(grid, head_dim, 10000.0, cls)
    x = torch.randn(2, cls + grid * grid, 3, head_dim)
    out = apply_rope(x, table)
    angles = reference_angles(grid, head_dim, 10000.0, cls)
    for pos in range(x.shape[1]):
        for p in range(head_dim // 2):
            z = torch.complex(x[:, pos, :, 2 * p].double(), x[:, pos, :, 2 * p + 1].double())
            a = angles[pos][p]
            rot = z * (complex(math.cos(a), math.sin(a)) if a is not None else 0)
            torch.testing.assert_close(out[:, pos, :, 2 * p].double(), rot.real, atol=1e-5, rtol=0)
            torch.testing.assert_close(out[:, pos, :, 2 * p + 1].double(), rot.imag, atol=1e-5, rtol=0)


def test_rope_table_not_in_state_dict_and_survives_bf16_cast():
    model = GPT(tiny_c2i()).to(torch.bfloat16)
    assert not any("freqs" in k or "rope" in k for k in model.state_dict())
    assert model.rope(torch.device("cpu")).dtype == torch.float32


def test_rmsnorm_computes_in_fp32():
    norm = RMSNorm(8, eps=1e-5)
    norm.weight.data = torch.linspace(0.5, 1.5, 8)
    x = (torch.randn(4, 8) * 100).to(torch.bfloat16)
    xf = x.double()
    want = (xf / torch.sqrt((xf**2).mean(-1, keepdim=True) + 1e-5)).to(torch.bfloat16).double() * norm.weight.double()
    torch.testing.assert_close(norm(x).double(), want, atol=1e-6, rtol=0)


# ---- forward semantics ---------------------------------------------------------------------

def step_by_step_logits(model: GPT, cond, context: torch.Tensor) -> torch.Tensor:
    cfg = model.config
    model.setup_cache(context.shape[0], cfg.cls_token_num + context.shape[1] - 1)
    out = [model.prefill(cond)]
    for t in range(context.shape[1] - 1):
        out.append(model.decode_step(context[:, t], cfg.cls_token_num + t))
    return torch.stack(out, dim=1)


def test_teacher_forced_equals_cached_decoding_c2i():
    cfg = tiny_c2i(block_size=16, vocab_size=512)
    model = small_gpt(cfg)
    labels, context = torch.tensor([0, 3, 10]), torch.randint(0, 512, (3, 16))
    with torch.no_grad():
        torch.testing.assert_close(model(labels, context), step_by_step_logits(model, labels, context), atol=2e-5, rtol=1e-5)


def test_teacher_forced_equals_cached_decoding_t2i_left_padded():
    cfg = tiny_t2i(block_size=16, vocab_size=512, cls_token_num=6)
    model = small_gpt(cfg)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6, [0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    features = torch.randn(3, 6, 32) * mask[..., None]
    context = torch.randint(0, 512, (3, 16))
    with torch.no_grad():
        tf = model((features, mask), context)
        torch.testing.assert_close(tf, step_by_step_logits(model, (features, mask), context), atol=2e-5, rtol=1e-5)


def test_t2i_pad_columns_are_masked():
    """Changing the features under the pad rows must not change any image-token logit."""
    cfg = tiny_t2i(block_size=16, vocab_size=512, cls_token_num=6)
    model = small_gpt(cfg)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1]], dtype=torch.bool)
    features = torch.randn(1, 6, 32)
    other = features.clone()
    other[:, :3] = torch.randn(1, 3, 32) * 10
    context = torch.randint(0, 512, (1, 16))
    with torch.no_grad():
        a, b = model((features, mask), context), model((other, mask), context)
        unmasked = model((other, None), context)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert (a - unmasked).abs().max() > 1e-3  # the mask really matters


def test_official_t2i_mask_semantics_by_explicit_attention():
    """Compare one layer's attention against a hand-built mask: tril, pad columns off, diagonal on."""
    key_valid = torch.tensor([[False, True, True, True]])
    got = GPT._attention_mask(key_valid, 0, 4)[0, 0]
    want = torch.tril(torch.ones(4, 4)) * key_valid.float()
    want = (want * (1 - torch.eye(4)) + torch.eye(4)).bool()
    assert torch.equal(got, want)


def test_train_mode_class_dropout_swaps_in_null_condition():
    cfg = tiny_c2i(block_size=16, vocab_size=512, class_dropout_prob=1.0, token_dropout_p=0.0,
                   resid_dropout_p=0.0, ffn_dropout_p=0.0)
    model = small_gpt(cfg)
    labels, context = torch.tensor([1, 2]), torch.randint(0, 512, (2, 16))
    with torch.no_grad():
        dropped = model.train()(labels, context)
        null = model.eval()(torch.full_like(labels, 10), context)
        kept = model.eval()(labels, context)
    torch.testing.assert_close(dropped, null)
    assert (kept - null).abs().max() > 1e-4


def test_t2i_train_mode_caption_dropout_uses_uncond_embedding():
    cfg = tiny_t2i(block_size=16, vocab_size=512, cls_token_num=6, class_dropout_prob=1.0,
                   token_dropout_p=0.0, resid_dropout_p=0.0, ffn_dropout_p=0.0)
    model = small_gpt(cfg)
    mask = torch.tensor([[0, 1, 1, 1, 1, 1]], dtype=torch.bool)
    features, context = torch.randn(1, 6, 32), torch.randint(0, 512, (1, 16))
    with torch.no_grad():
        dropped = model.train()((features, mask), context)
        null = model.eval()(model.null_condition((features, mask)), context)
    torch.testing.assert_close(dropped, null)


def test_teacher_forcing_after_sampling_with_other_batch_size_and_grad():
    """The official model leaves its cache attached and crashes here; ours must not."""
    model = small_gpt(tiny_c2i(block_size=16, vocab_size=512))
    model.setup_cache(8, 16)
    model.prefill(torch.arange(8) % 10)
    assert not any("kv_cache" in k for k in model.state_dict())
    model.train()
    logits = model(torch.tensor([1, 2, 3]), torch.randint(0, 512, (3, 16)))
    logits.sum().backward()
    assert logits.shape == (3, 16, 512)
    assert model.tok_embeddings.weight.grad is not None


def test_condition_errors_are_clear():
    model = small_gpt(tiny_c2i(block_size=16, vocab_size=512))
    with pytest.raises(ValueError, match=r"class labels must lie in \[0, 11\)"):
        model(torch.tensor([11]), torch.zeros(1, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="batch mismatch"):
        model(torch.tensor([1, 2]), torch.zeros(3, 16, dtype=torch.long))
    t2i = small_gpt(tiny_t2i(block_size=16, vocab_size=512, cls_token_num=6))
    with pytest.raises(ValueError, match=r"\[B, 6, 32\]"):
        t2i((torch.zeros(1, 5, 32), None), torch.zeros(1, 16, dtype=torch.long))


# ---- VQ ------------------------------------------------------------------------------------

def tiny_vq(**kw) -> VQModel:
    torch.manual_seed(0)
    cfg = VQConfig(**{**dict(codebook_size=64, ch=32, ch_mult=(1, 1, 2), z_channels=32), **kw})
    return VQModel(cfg).eval()


def test_vq_official_key_names():
    with torch.device("meta"):
        state = VQModel(VQ_CONFIGS["VQ-16"]).state_dict()
    assert tuple(state["encoder.conv_in.weight"].shape) == (128, 3, 3, 3)
    assert tuple(state["decoder.conv_out.weight"].shape) == (3, 128, 3, 3)
    assert tuple(state["quantize.embedding.weight"].shape) == (16384, 8)
    assert tuple(state["quantize.codebook_used"].shape) == (65536,)
    assert tuple(state["quant_conv.weight"].shape) == (8, 256, 1, 1)
    assert tuple(state["post_quant_conv.weight"].shape) == (256, 8, 1, 1)
    for key in ("encoder.conv_blocks.4.attn.1.proj_out.weight", "encoder.conv_blocks.1.res.0.conv2.weight",
                "encoder.conv_blocks.2.res.0.nin_shortcut.weight", "encoder.conv_blocks.3.downsample.conv.weight",
                "encoder.mid.1.q.weight", "encoder.mid.2.norm2.bias", "decoder.conv_blocks.0.attn.2.k.weight",
                "decoder.conv_blocks.4.res.2.conv1.weight", "decoder.conv_blocks.3.upsample.conv.weight"):
        assert key in state, key
    assert "encoder.conv_blocks.4.downsample.conv.weight" not in state
    assert "decoder.conv_blocks.4.upsample.conv.weight" not in state
    assert tuple(state["encoder.mid.0.conv1.weight"].shape) == (512, 512, 3, 3)


def test_vq_config_rejects_non_multiple_of_32():
    with pytest.raises(ValueError, match="multiples of 32"):
        VQConfig(ch=48)


def test_vq_round_trip_and_decode_codes_equivalence():
    vq = tiny_vq()
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        idx = vq.encode_indices(images)
        assert idx.shape == (2, 16) and idx.dtype == torch.long
        assert vq.grid_size(16) == 4
        decoded = vq.decode_indices(idx)
        assert decoded.shape == (2, 3, 16, 16)
        torch.testing.assert_close(vq.decode_codes(vq.codebook()[idx]), decoded, atol=0, rtol=0)
        torch.testing.assert_close(vq.codebook().norm(dim=-1), torch.ones(64))


def test_vq_encode_is_normalised_nearest_neighbour_in_raster_order():
    vq = tiny_vq()
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        z = vq.quant_conv(vq.encoder(images))  # [B, D, h, w]
        zf = F.normalize(z.permute(0, 2, 3, 1), dim=-1)  # raster: row-major over (h, w)
        cosine = zf @ F.normalize(vq.quantize.embedding.weight, dim=-1).t()
        want = cosine.argmax(-1).reshape(2, -1)
        assert torch.equal(vq.encode_indices(images), want)


def test_vq_training_forward_straight_through_and_usage():
    vq = tiny_vq().train()
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    recon, losses = vq(images)
    assert recon.shape == images.shape
    assert set(losses) >= {"vq_loss", "commit_loss", "entropy_loss", "codebook_usage"}
    (F.mse_loss(recon, images) + losses["vq_loss"] + losses["commit_loss"]).backward()
    assert vq.encoder.conv_in.weight.grad.abs().sum() > 0  # straight-through reaches the encoder
    assert vq.quantize.embedding.weight.grad.abs().sum() > 0  # vq_loss trains the codebook
    assert torch.count_nonzero(vq.quantize.codebook_used[-32:]) > 0
    assert torch.allclose(losses["commit_loss"], 0.25 * losses["vq_loss"])


def test_vq_entropy_loss_matches_formula():
    from vapi_bench.plugins.llamagen.vq import codebook_entropy_loss

    torch.manual_seed(0)
    affinity = torch.randn(5, 7)
    p = F.softmax(affinity / 0.01, dim=-1)
    avg = p.mean(0)
    want = -(p * F.log_softmax(affinity / 0.01 + 1e-5, -1)).sum(-1).mean() + (avg * torch.log(avg + 1e-5)).sum()
    torch.testing.assert_close(codebook_entropy_loss(affinity), want)


def test_tokenizer_decoder_shares_parameters():
    vq = tiny_vq()
    half = vq.decoder_half()
    assert set(half.state_dict()) == {k for k in vq.state_dict() if k.startswith(("decoder.", "post_quant_conv."))}
    idx = torch.randint(0, 64, (1, 16))
    code_map = vq.codebook()[idx].reshape(1, 4, 4, 8).permute(0, 3, 1, 2)
    with torch.no_grad():
        torch.testing.assert_close(half(code_map), vq.decode_indices(idx), atol=0, rtol=0)
    assert half.decoder.conv_in.weight is vq.decoder.conv_in.weight


def test_janus_key_map_round_trip():
    state = tiny_vq().state_dict()
    janus = to_janus_keys(state)
    assert "quantize.codebook_used" not in janus
    assert "encoder.down.2.block.0.nin_shortcut.weight" in janus
    assert "encoder.mid.attn_1.q.weight" in janus and "decoder.mid.block_2.conv2.weight" in janus
    assert "decoder.up.0.attn.1.proj_out.weight" in janus
    back = from_janus_keys(janus)
    assert set(back) == set(state)


def test_janus_vqvae_loads_strictly_and_decodes_identically():
    transformers = pytest.importorskip("transformers")
    vq = tiny_vq()
    cfg = transformers.JanusVQVAEConfig(
        embed_dim=8, num_embeddings=64, base_channels=32, channel_multiplier=[1, 1, 2], latent_channels=32,
        num_res_blocks=2, num_patches=4,
    )
    hf = transformers.JanusVQVAE(cfg).eval()
    missing, unexpected = hf.load_state_dict(to_janus_keys(vq.state_dict()), strict=True)
    assert missing == [] and unexpected == []
    idx = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(hf.decode(idx), vq.decode_indices(idx), atol=0, rtol=0)
