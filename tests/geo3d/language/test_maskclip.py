"""MaskCLIPTeacher with a tiny random CLIP saved to disk: the pooled path equals transformers'
get_image_features, the dense path equals a manual computation from the raw weights, position
interpolation, batching, the shared embedding space with CLIPTextEncoder, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from geo3d.language.maskclip import MaskCLIPTeacher, interpolate_position_embeddings  # noqa: E402
from geo3d.language.teachers import TeacherError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PATCH = 8
NATIVE = 32


def write_tiny_clip(folder, seed: int = 0, with_tokenizer: bool = True) -> transformers.CLIPModel:
    """A randomly initialised 3-layer CLIP (ViT patch 8 at 32 px, projection 24) saved with its
    tokenizer files (a character-level CLIP BPE vocabulary)."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in "abcdefghijklmnopqrstuvwxyz.":
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    config = transformers.CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         vocab_size=len(vocab), max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                           image_size=NATIVE, patch_size=PATCH),
        projection_dim=24,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = transformers.CLIPModel(config).eval()
    with torch.no_grad():  # random LayerNorm affine parameters, so that the test sees them applied
        for name, param in model.vision_model.named_parameters():
            if "layer_norm" in name or "layrnorm" in name:
                param.add_(0.1 * torch.randn_like(param))
    model.save_pretrained(folder)
    if with_tokenizer:
        (folder / "vocab.json").write_text(json.dumps(vocab))
        (folder / "merges.txt").write_text("#version: 0.2\n")
    return model


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip") / "tiny-clip"
    model = write_tiny_clip(folder)
    return folder, model


def manual_dense(model, pixel_values: torch.Tensor, residual: bool = True, ffn: bool = True) -> torch.Tensor:
    """MaskCLIP value path written from the raw state dict: input of the last layer from transformers'
    hidden states, then layer norms, v/out projections, MLP (quick GELU), post norm, projection."""
    state = model.state_dict()
    hidden = model.vision_model(pixel_values=pixel_values, output_hidden_states=True).hidden_states
    x = hidden[-2]  # input of the last encoder layer
    prefix = f"vision_model.encoder.layers.{model.config.vision_config.num_hidden_layers - 1}."
    eps = model.config.vision_config.layer_norm_eps

    def norm(t, name):
        return torch.nn.functional.layer_norm(t, t.shape[-1:], state[name + ".weight"], state[name + ".bias"], eps)

    def linear(t, name):
        return t @ state[name + ".weight"].T + state[name + ".bias"]

    v = linear(linear(norm(x, prefix + "layer_norm1"), prefix + "self_attn.v_proj"), prefix + "self_attn.out_proj")
    t = x + v if residual else v
    if ffn:
        h = linear(norm(t, prefix + "layer_norm2"), prefix + "mlp.fc1")
        t = t + linear(h * torch.sigmoid(1.702 * h), prefix + "mlp.fc2")
    t = norm(t, "vision_model.post_layernorm")[:, 1:]
    f = t @ state["visual_projection.weight"].T
    return f / f.norm(dim=-1, keepdim=True)


def test_shapes_stride_and_units(tiny_clip):
    folder, _ = tiny_clip
    teacher = MaskCLIPTeacher(folder)
    images = torch.rand(3, 40, 56, 3)
    dense = teacher(images)
    # short side 40 -> 32: 32 x 44.8 px -> 4 x 6 patches of 8 px
    assert dense.features.shape == (3, 4, 6, 24) and dense.features.dtype == torch.float32
    assert dense.stride == pytest.approx((56 / 6, 40 / 4)) and dense.image_size == (40, 56)
    assert torch.allclose(dense.features.norm(dim=-1), torch.ones(3, 4, 6), atol=1e-5)
    assert teacher.dim == 24
    assert MaskCLIPTeacher(folder, input_size=(48, 64))(images).features.shape == (3, 6, 8, 24)
    assert MaskCLIPTeacher(folder, input_size=64)(images).features.shape == (3, 8, 11, 24)


def test_pooled_path_equals_get_image_features(tiny_clip):
    folder, model = tiny_clip
    teacher = MaskCLIPTeacher(folder)
    images = torch.rand(2, NATIVE, NATIVE, 3)
    ours = teacher.image_embeddings(images)
    with torch.no_grad():
        ref = model.get_image_features(pixel_values=teacher.preprocess(images))
    ref = getattr(ref, "pooler_output", ref)
    torch.testing.assert_close(ours, torch.nn.functional.normalize(ref, dim=-1), rtol=1e-5, atol=1e-5)
    # non-square input: our bicubic position resampling equals transformers' interpolate_pos_encoding
    wide = MaskCLIPTeacher(folder, input_size=(24, 48))
    images = torch.rand(2, 24, 48, 3)
    with torch.no_grad():
        ref = model.get_image_features(pixel_values=wide.preprocess(images), interpolate_pos_encoding=True)
    ref = getattr(ref, "pooler_output", ref)
    ref = torch.nn.functional.normalize(ref, dim=-1)
    torch.testing.assert_close(wide.image_embeddings(images), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("residual, ffn", [(True, True), (False, False), (True, False)])
def test_dense_equals_manual_computation(tiny_clip, residual, ffn):
    folder, model = tiny_clip
    teacher = MaskCLIPTeacher(folder, residual=residual, ffn=ffn)
    images = torch.rand(2, NATIVE, NATIVE, 3)
    with torch.no_grad():
        expected = manual_dense(model, teacher.preprocess(images), residual, ffn).reshape(2, 4, 4, 24)
    torch.testing.assert_close(teacher(images).features, expected, rtol=1e-5, atol=1e-5)


def test_batching_invariance_and_uint8(tiny_clip):
    folder, _ = tiny_clip
    images = (torch.rand(5, 30, 45, 3) * 255).round().to(torch.uint8)
    one = MaskCLIPTeacher(folder, batch_size=1)(images).features
    many = MaskCLIPTeacher(folder, batch_size=4)(images).features
    torch.testing.assert_close(one, many, rtol=1e-5, atol=1e-6)
    as_float = MaskCLIPTeacher(folder)(images.float() / 255).features
    torch.testing.assert_close(as_float, many, rtol=1e-5, atol=1e-6)
    rgba = torch.cat([images, torch.zeros_like(images[..., :1])], -1).numpy()  # alpha is dropped
    torch.testing.assert_close(MaskCLIPTeacher(folder)(rgba).features, many, rtol=1e-5, atol=1e-6)


def test_position_interpolation(tiny_clip):
    _, model = tiny_clip
    position = model.vision_model.embeddings.position_embedding.weight.detach()
    assert interpolate_position_embeddings(position, (4, 4)) is position  # native grid: unchanged
    embeddings = model.vision_model.embeddings
    for grid in ((3, 7), (6, 6), (2, 2)):
        ours = interpolate_position_embeddings(position, grid)
        dummy = torch.zeros(1, 1 + grid[0] * grid[1], position.shape[1])
        with torch.no_grad():
            ref = embeddings.interpolate_pos_encoding(dummy, grid[0] * PATCH, grid[1] * PATCH)[0]
        torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    with pytest.raises(TeacherError, match="square"):
        interpolate_position_embeddings(position[:-1], (2, 2))


def test_space_equals_clip_text_encoder_space(tiny_clip, tmp_path):
    folder, _ = tiny_clip
    from geo3d.language.text import CLIPTextEncoder

    assert MaskCLIPTeacher(folder).space == CLIPTextEncoder(folder).space
    other = tmp_path / "tiny-clip"
    write_tiny_clip(other, seed=1)
    assert MaskCLIPTeacher(other).space != MaskCLIPTeacher(folder).space  # same name, other weights


def test_identity(tiny_clip):
    folder, _ = tiny_clip
    base = MaskCLIPTeacher(folder)
    assert base.identity == MaskCLIPTeacher(folder, batch_size=2).identity  # batching does not change features
    for kwargs in (dict(input_size=64), dict(residual=False), dict(ffn=False), dict(input_size=(32, 64))):
        assert MaskCLIPTeacher(folder, **kwargs).identity != base.identity, kwargs


def test_checkpoint_errors(tmp_path, tiny_clip):
    with pytest.raises(TeacherError, match="does not exist"):
        MaskCLIPTeacher(tmp_path / "nowhere")
    with pytest.raises(TeacherError, match="config.json"):
        MaskCLIPTeacher(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(TeacherError, match="no weights"):
        MaskCLIPTeacher(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(TeacherError, match="model_type"):
        MaskCLIPTeacher(tmp_path)
    with pytest.raises(TeacherError, match="checkpoint"):
        MaskCLIPTeacher("")
    folder, _ = tiny_clip
    for bad in (0, -3, (32,), (32, 0), (32.0, 32), True):
        with pytest.raises(TeacherError, match="input_size"):
            MaskCLIPTeacher(folder, input_size=bad)
    with pytest.raises(TeacherError, match="batch_size"):
        MaskCLIPTeacher(folder, batch_size=0)


def test_image_errors(tiny_clip):
    folder, _ = tiny_clip
    teacher = MaskCLIPTeacher(folder)
    for images, match in [
        (torch.rand(32, 32, 3), r"\[C, H, W, 3\]"),
        (torch.rand(1, 32, 32, 2), r"\[C, H, W, 3\]"),
        (torch.rand(0, 32, 32, 3), "empty"),
        (torch.full((1, 8, 8, 3), float("nan")), "NaN"),
        (torch.full((1, 8, 8, 3), 2.0), r"\[0, 1\]"),
        (np.zeros((1, 8, 8, 3), np.int32), "uint8 or float"),
        ("image.png", "array or tensor"),
    ]:
        with pytest.raises(TeacherError, match=match):
            teacher(images)
